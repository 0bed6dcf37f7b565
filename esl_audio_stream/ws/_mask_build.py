"""cffi build script for WebSocket frame masking (RFC 6455 5.3), run by setup.py.

Every frame a client sends must be XORed with a fresh 4-byte key. In Python that is a big-int
round trip (~10 us per 640-byte frame); in C it is a few hundred nanoseconds, and it is done in
place in the frame buffer, so the per-frame path allocates nothing for it.
"""

from cffi import FFI

ffibuilder = FFI()
ffibuilder.cdef(
    """
    void eas_mask(unsigned char *buf, size_t n, const unsigned char *key);
    void eas_frame_mask(unsigned char *frame, size_t hl, size_t n, const unsigned char *pool,
                        uint32_t at);
    """
)
ffibuilder.set_source(
    "esl_audio_stream.ws._mask",
    """
    #include <stddef.h>
    #include <stdint.h>
    #include <string.h>
    static void eas_mask(unsigned char *buf, size_t n, const unsigned char *key) {
        uint32_t k;
        uint64_t k8;
        size_t i = 0;
        memcpy(&k, key, 4);
        k8 = ((uint64_t)k << 32) | k;
        for (; i + 8 <= n; i += 8) {
            uint64_t v;
            memcpy(&v, buf + i, 8);
            v ^= k8;
            memcpy(buf + i, &v, 8);
        }
        for (; i < n; i++)
            buf[i] ^= key[i & 3];
    }
    /* A frame's mask key (the pool's 4 bytes at `at`) after its `hl`-byte header, and its
       `n`-byte payload masked with it: one call per frame, no pointer made in Python. */
    static void eas_frame_mask(unsigned char *frame, size_t hl, size_t n,
                               const unsigned char *pool, uint32_t at) {
        memcpy(frame + hl, pool + at, 4);
        eas_mask(frame + hl + 4, n, pool + at);
    }
    """,
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
