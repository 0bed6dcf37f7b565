"""cffi build script (API mode) for the native frame pump (native/pump.c); run by setup.py.

The pump reads a call's UDP socket (datagrams) or a recording's FIFO (a byte stream it cuts
into frames: eas_pump_set_fifo). Optional: a machine that cannot compile it (no compiler, no
speexdsp headers) installs without it, and every stream takes the Python path
(native/engine.py's `AVAILABLE`). It links the same libspeexdsp as media/_speex_build.py: the
pump resamples with the pipeline's own state.
"""

from pathlib import Path

from cffi import FFI

ffibuilder = FFI()
ffibuilder.cdef(
    """
    typedef struct SpeexResamplerState_ SpeexResamplerState;
    typedef struct eas_pump {
        int in_fd;
        int tcp_fd;
        SpeexResamplerState *rs;
        const unsigned char *masks;
        uint32_t *mask_at;
        uint32_t mask_pool;
        uint64_t sample_mask;
        uint64_t frames_in, frames_out, malformed;
        unsigned char *last;
        uint32_t last_len;
        unsigned char *pend;
        uint32_t pend_len;
        const unsigned char *out;
        uint32_t out_len;
        int why, err;
        int sampling;
        double t0, sample, last_out;
        double latency;
        const unsigned char *rest;
        uint32_t rest_len;
        int slot;
        uint32_t fifo_frame, fifo_max;
        unsigned char *inbuf;
        uint32_t in_at, in_len;
        uint64_t bytes_read;
        ...;
    } eas_pump;
    typedef struct eas_engine eas_engine;

    #define EAS_STEADY ...
    #define EAS_SAMPLE ...
    #define EAS_SHORT ...
    #define EAS_SEND_ERROR ...
    #define EAS_MASKS ...
    #define EAS_RECV_ERROR ...
    #define EAS_RESAMPLE_ERROR ...
    #define EAS_EOF ...
    #define EAS_MAX_DATAGRAM ...

    double eas_now(void);
    eas_pump *eas_pump_new(uint32_t chunk, uint32_t channels, uint32_t in_rate,
                           uint32_t out_rate);
    void eas_pump_free(eas_pump *p);
    int eas_pump_set_pending(eas_pump *p, const char *data, uint32_t n);
    int eas_pump_set_fifo(eas_pump *p, uint32_t frame, uint32_t max);
    int eas_pump_set_input(eas_pump *p, const char *data, uint32_t n);
    eas_engine *eas_engine_new(void);
    void eas_engine_free(eas_engine *e);
    int eas_engine_fd(const eas_engine *e);
    int eas_engine_add(eas_engine *e, eas_pump *p);
    void eas_engine_remove(eas_engine *e, eas_pump *p);
    int eas_engine_run(eas_engine *e, int fresh);
    int eas_engine_resume(eas_engine *e, eas_pump *p);
    int eas_pump_feed(eas_engine *e, eas_pump *p, const char *data, uint32_t n);
    void eas_engine_set_room(eas_engine *e, int64_t room, int err);
    uint32_t eas_engine_captured(eas_engine *e, const unsigned char **data);
    """
)
# The C source is kept in its own file (read here, where setup.py runs this script).
ffibuilder.set_source(
    "esl_audio_stream.native._pump",
    Path(__file__).with_name("pump.c").read_text(),
    libraries=["speexdsp"],
    optional=True,
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
