"""cffi build script (API mode) for the speexdsp resampler; run by setup.py's `cffi_modules`.

API mode compiles a small C extension against Debian's libspeexdsp at install time, so each call
into the resampler is a direct C call with no libffi marshalling on the per-frame path.
"""

from cffi import FFI

ffibuilder = FFI()
ffibuilder.cdef(
    """
    typedef struct SpeexResamplerState_ SpeexResamplerState;
    typedef int16_t spx_int16_t;
    typedef uint32_t spx_uint32_t;
    SpeexResamplerState *speex_resampler_init(spx_uint32_t nb_channels, spx_uint32_t in_rate,
        spx_uint32_t out_rate, int quality, int *err);
    void speex_resampler_destroy(SpeexResamplerState *st);
    int speex_resampler_process_interleaved_int(SpeexResamplerState *st, const spx_int16_t *in,
        spx_uint32_t *in_len, spx_int16_t *out, spx_uint32_t *out_len);
    int speex_resampler_skip_zeros(SpeexResamplerState *st);
    int speex_resampler_reset_mem(SpeexResamplerState *st);
    int speex_resampler_get_input_latency(SpeexResamplerState *st);
    int speex_resampler_get_output_latency(SpeexResamplerState *st);
    const char *speex_resampler_strerror(int err);
    int eas_resample(SpeexResamplerState *st, const char *in, uint32_t nbytes, uint32_t channels,
        spx_int16_t *out, uint32_t out_cap);
    """
)
# eas_resample: the per-frame call in one C call, taking the bytes object as it is (cffi passes
# a `const char *` argument without a Python-side buffer object). Returns the output size in
# bytes, -1 when not all input was consumed (the caller takes the general path), or
# -1000 - <speex error>.
ffibuilder.set_source(
    "esl_audio_stream.media._speexdsp",
    """
    #include <speex/speex_resampler.h>
    static int eas_resample(SpeexResamplerState *st, const char *in, uint32_t nbytes,
                            uint32_t channels, spx_int16_t *out, uint32_t out_cap) {
        spx_uint32_t frames = nbytes / (2 * channels), in_len = frames, out_len = out_cap;
        int rc = speex_resampler_process_interleaved_int(st, (const spx_int16_t *)in, &in_len,
                                                         out, &out_len);
        if (rc != 0)
            return -1000 - rc;
        if (in_len != frames)
            return -1;
        return (int)(out_len * 2 * channels);
    }
    """,
    libraries=["speexdsp"],
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
