/* The native frame pump: a stream's steady state in C (see native/pump.py for the why).
 *
 * One engine per process: an epoll set of the UDP sockets (and recording FIFOs) whose streams
 * are steady, shared buffers, and `eas_engine_run`, which the Python shell calls from ONE gevent
 * watcher on the epoll fd. For each readable socket: one datagram in (recv); for each readable
 * FIFO: one read of a few frames' bytes, cut into frames of the recording's frame size (a byte
 * stream: a partial frame waits for the next read, as call/reader.py's FifoReader keeps it).
 * Each frame then goes the same way: L16 checked, comfort noise to
 * silence, the pipeline's own speexdsp state, chunks of the stream's size, each framed as a
 * masked binary WebSocket message (keys from the connection's own pool, ws/framing.py) and
 * handed to the kernel in one non-blocking send. Whatever is not steady -- a short write, an
 * error, the pool of mask keys used up, a frame to time -- stops the run and names the pump that
 * needs Python (`why`); the shell does what the Python path would and calls run again.
 *
 * Each step does what call/pipeline.py, media/frames.py, media/resample.py and ws/framing.py do,
 * in the same order, so the bytes on the wire are the same (tests/test_native*.py compare).
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <linux/sockios.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <unistd.h>
#include <speex/speex_resampler.h>

#define EAS_MAX_DATAGRAM 8192 /* what call/reader.py reads at most */
#define EAS_MAX_EVENTS 256
#define EAS_ROUNDS 4 /* epoll_wait rounds per run: frames that came meanwhile, without libev */

enum {
    EAS_STEADY = 0,
    EAS_SAMPLE = 1,     /* a timed frame went out: `sample` seconds, `latency` since it came */
    EAS_SHORT = 2,      /* the kernel took part of a frame (maybe none): `rest` is the rest */
    EAS_SEND_ERROR = 3, /* send failed with `err`: `rest` is the chunk (unmasked) */
    EAS_MASKS = 4,      /* the mask pool is used up: refill it, then eas_engine_resume */
    EAS_RECV_ERROR = 5, /* recv (or a FIFO's read) failed with `err` */
    EAS_RESAMPLE_ERROR = 6, /* speexdsp failed: `err` is its code (-1: input left) */
    EAS_EOF = 7 /* the FIFO's writer closed it (the recording ended or was stopped) */
};

typedef struct eas_pump {
    int in_fd;               /* the UDP socket, or the FIFO (fifo_frame > 0) */
    int tcp_fd;              /* < 0: frames go to the engine's capture buffer (tests) */
    SpeexResamplerState *rs; /* the pipeline's (not owned); NULL: rates equal */
    uint32_t channels;
    uint32_t chunk; /* bytes of one chunk (STREAM_BUFFER_SIZE) */
    uint32_t out_num, out_den; /* stream rate / channel rate: sizes the engine's buffer */
    const unsigned char *masks; /* the connection's pool of mask keys (ws/framing.py) */
    uint32_t *mask_at;          /* ... and the offset of the next key in it */
    uint32_t mask_pool;
    uint64_t sample_mask; /* a frame whose count has none of these bits is timed */
    uint64_t frames_in, frames_out, malformed;
    unsigned char *last; /* the last caller frame (the level meter's) */
    uint32_t last_len, last_cap;
    unsigned char *pend; /* less than a chunk, waiting for more */
    uint32_t pend_len;
    const unsigned char *out; /* resampled audio not yet cut (after an interruption) */
    uint32_t out_len;
    int why, err;
    int sampling; /* the frame under way is timed (from t0) */
    double t0, sample, last_out;
    double latency; /* a timed datagram: its arrival (the kernel's stamp) to its send; < 0: none */
    const unsigned char *rest;
    uint32_t rest_len;
    int slot; /* in the engine; -1 when not in one */
    /* a FIFO (fifo_frame > 0): bytes read and not yet fed as frames, inbuf[in_at..in_len) */
    uint32_t fifo_frame, fifo_max; /* one frame's bytes; bytes per read at most */
    unsigned char *inbuf;
    uint32_t in_cap, in_at, in_len;
    uint64_t bytes_read; /* what the FIFO gave (FifoReader's bytes_in) */
    uint32_t run_mark;   /* the engine's run in which it was last read */
} eas_pump;

typedef struct eas_engine {
    int epfd;
    struct epoll_event evs[EAS_MAX_EVENTS];
    int n, at, rounds;
    uint32_t run;   /* runs (wake-ups) so far: a FIFO is read once per run */
    eas_pump *cur;  /* the pump the run stopped on (a FIFO's frames of that read go on) */
    eas_pump **slots;
    int nslots;
    unsigned char rbuf[EAS_MAX_DATAGRAM];
    unsigned char *obuf; /* resampler output */
    uint32_t ocap;       /* in bytes */
    unsigned char *fbuf; /* one frame */
    uint32_t fcap;
    unsigned char *cap; /* capture (tcp_fd < 0) */
    uint32_t cap_len, cap_cap;
    int64_t cap_room; /* bytes the capture takes before refusing; < 0: any */
    int cap_errno;    /* != 0: the capture fails with it */
} eas_engine;

static const unsigned char silence[EAS_MAX_DATAGRAM];

double eas_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* ---------------------------------------------------------------------- the pump's memory */

eas_pump *eas_pump_new(uint32_t chunk, uint32_t channels, uint32_t in_rate, uint32_t out_rate) {
    eas_pump *p;
    if (!chunk || !channels || !in_rate || !out_rate)
        return NULL;
    p = calloc(1, sizeof *p);
    if (!p)
        return NULL;
    p->pend = malloc(chunk);
    if (!p->pend) {
        free(p);
        return NULL;
    }
    p->in_fd = p->tcp_fd = -1;
    p->chunk = chunk;
    p->channels = channels;
    p->out_num = out_rate;
    p->out_den = in_rate;
    p->sample_mask = ~(uint64_t)0;
    p->slot = -1;
    return p;
}

void eas_pump_free(eas_pump *p) {
    if (p) {
        free(p->inbuf);
        free(p->pend);
        free(p->last);
        free(p);
    }
}

/* Audio that was not a whole chunk yet on the Python side (at most a chunk's worth). */
int eas_pump_set_pending(eas_pump *p, const char *data, uint32_t n) {
    if (n > p->chunk)
        return -1;
    memcpy(p->pend, data, n);
    p->pend_len = n;
    return 0;
}

/* The pump reads a FIFO: `frame` bytes a frame, at most `max` bytes a read (0 or -ENOMEM). */
int eas_pump_set_fifo(eas_pump *p, uint32_t frame, uint32_t max) {
    uint64_t cap = (uint64_t)frame + max;
    if (!frame || frame & 1 || max < frame || cap > 1u << 24)
        return -EINVAL;
    if (cap > p->in_cap) {
        unsigned char *b = realloc(p->inbuf, cap);
        if (!b)
            return -ENOMEM;
        p->inbuf = b;
        p->in_cap = (uint32_t)cap;
    }
    p->fifo_frame = frame;
    p->fifo_max = max;
    p->in_at = p->in_len = 0;
    return 0;
}

/* Bytes the Python reader had read and not yet fed (a partial frame, at most a read's worth). */
int eas_pump_set_input(eas_pump *p, const char *data, uint32_t n) {
    if (!p->fifo_frame || n > p->fifo_max)
        return -1;
    memcpy(p->inbuf, data, n);
    p->in_at = 0;
    p->in_len = n;
    return 0;
}

/* --------------------------------------------------------------------------- the engine */

static int fit(eas_engine *e, const eas_pump *p) {
    uint64_t frames = EAS_MAX_DATAGRAM / (2 * p->channels);
    uint64_t ocap = ((frames * p->out_num + p->out_den - 1) / p->out_den + 4) * 2 * p->channels;
    uint64_t fcap = (uint64_t)p->chunk + 14;
    if (ocap > e->ocap) {
        unsigned char *b = realloc(e->obuf, ocap);
        if (!b)
            return -ENOMEM;
        e->obuf = b;
        e->ocap = (uint32_t)ocap;
    }
    if (fcap > e->fcap) {
        unsigned char *b = realloc(e->fbuf, fcap);
        if (!b)
            return -ENOMEM;
        e->fbuf = b;
        e->fcap = (uint32_t)fcap;
    }
    return 0;
}

eas_engine *eas_engine_new(void) {
    eas_engine *e = calloc(1, sizeof *e);
    if (!e)
        return NULL;
    e->epfd = epoll_create1(EPOLL_CLOEXEC);
    if (e->epfd < 0) {
        free(e);
        return NULL;
    }
    e->cap_room = -1;
    return e;
}

void eas_engine_free(eas_engine *e) {
    if (e) {
        if (e->epfd >= 0)
            close(e->epfd);
        free(e->slots);
        free(e->obuf);
        free(e->fbuf);
        free(e->cap);
        free(e);
    }
}

int eas_engine_fd(const eas_engine *e) { return e->epfd; }

/* The pump's socket joins the set; 0 or -errno. */
int eas_engine_add(eas_engine *e, eas_pump *p) {
    struct epoll_event ev;
    int slot, rc = fit(e, p);
    if (rc)
        return rc;
    for (slot = 0; slot < e->nslots && e->slots[slot]; slot++)
        ;
    if (slot == e->nslots) {
        int n = e->nslots ? 2 * e->nslots : 64;
        eas_pump **s = realloc(e->slots, n * sizeof *s);
        if (!s)
            return -ENOMEM;
        memset(s + e->nslots, 0, (n - e->nslots) * sizeof *s);
        e->slots = s;
        e->nslots = n;
    }
    memset(&ev, 0, sizeof ev);
    ev.events = EPOLLIN;
    ev.data.u32 = (uint32_t)slot;
    if (epoll_ctl(e->epfd, EPOLL_CTL_ADD, p->in_fd, &ev) < 0)
        return -errno;
    e->slots[slot] = p;
    p->slot = slot;
    return 0;
}

/* Out of the set; events already read for it are skipped (its slot is empty, or another's:
 * then one recv finds nothing). */
void eas_engine_remove(eas_engine *e, eas_pump *p) {
    if (p->slot < 0)
        return;
    epoll_ctl(e->epfd, EPOLL_CTL_DEL, p->in_fd, NULL);
    e->slots[p->slot] = NULL;
    p->slot = -1;
    if (e->cur == p)
        e->cur = NULL;
}

/* ------------------------------------------------------------------------- per frame */

static int put(eas_engine *e, eas_pump *p, const unsigned char *buf, uint32_t n) {
    /* one non-blocking send; the capture stands in for the kernel in tests */
    ssize_t sent;
    if (p->tcp_fd >= 0) {
        do
            sent = send(p->tcp_fd, buf, n, MSG_DONTWAIT | MSG_NOSIGNAL);
        while (sent < 0 && errno == EINTR);
        return (int)sent;
    }
    if (e->cap_errno) {
        errno = e->cap_errno;
        return -1;
    }
    sent = n;
    if (e->cap_room >= 0 && (int64_t)n > e->cap_room)
        sent = (ssize_t)e->cap_room;
    if (sent == 0) {
        errno = EAGAIN;
        return -1;
    }
    if (e->cap_len + (uint64_t)sent > e->cap_cap) {
        uint32_t c = e->cap_cap ? e->cap_cap : 4096;
        unsigned char *b;
        while (c < e->cap_len + (uint64_t)sent)
            c *= 2;
        b = realloc(e->cap, c);
        if (!b) {
            errno = ENOMEM;
            return -1;
        }
        e->cap = b;
        e->cap_cap = c;
    }
    memcpy(e->cap + e->cap_len, buf, sent);
    e->cap_len += (uint32_t)sent;
    if (e->cap_room >= 0)
        e->cap_room -= sent;
    return (int)sent;
}

/* ws/framing.py FrameWriter.frame for one binary message, FIN, never compressed. */
static int send_chunk(eas_engine *e, eas_pump *p, const unsigned char *chunk) {
    uint32_t n = p->chunk, hl, i, at = *p->mask_at;
    unsigned char *f = e->fbuf, *key;
    uint32_t k;
    uint64_t k8;
    int sent;
    *p->mask_at = at + 4;
    f[0] = 0x82;
    if (n < 126) {
        f[1] = 0x80 | (unsigned char)n;
        hl = 2;
    } else if (n < 65536) {
        f[1] = 0xFE;
        f[2] = (unsigned char)(n >> 8);
        f[3] = (unsigned char)n;
        hl = 4;
    } else {
        uint64_t m = n;
        f[1] = 0xFF;
        for (i = 0; i < 8; i++)
            f[2 + i] = (unsigned char)(m >> (56 - 8 * i));
        hl = 10;
    }
    key = f + hl;
    memcpy(key, p->masks + at, 4);
    memcpy(&k, key, 4);
    k8 = ((uint64_t)k << 32) | k;
    f += hl + 4;
    for (i = 0; i + 8 <= n; i += 8) {
        uint64_t v;
        memcpy(&v, chunk + i, 8);
        v ^= k8;
        memcpy(f + i, &v, 8);
    }
    for (; i < n; i++)
        f[i] = chunk[i] ^ key[i & 3];
    p->frames_out++;
    p->last_out = eas_now();
    n += hl + 4;
    sent = put(e, p, e->fbuf, n);
    if (sent == (int)n)
        return EAS_STEADY;
    if (sent < 0 && errno != EAGAIN && errno != EWOULDBLOCK) {
        p->err = errno;
        p->rest = chunk;
        p->rest_len = p->chunk;
        return EAS_SEND_ERROR;
    }
    if (sent < 0)
        sent = 0;
    p->rest = e->fbuf + sent;
    p->rest_len = n - (uint32_t)sent;
    return EAS_SHORT;
}

/* media/frames.py Chunker: p->out cut into chunks, the tail kept in p->pend. A key is taken
 * from the pool only for a chunk that goes out, as FrameWriter takes it. */
static int emit(eas_engine *e, eas_pump *p) {
    while (p->out_len) {
        const unsigned char *chunk;
        int why;
        if (!p->pend_len && p->out_len >= p->chunk) {
            if (*p->mask_at + 4 > p->mask_pool)
                return EAS_MASKS;
            chunk = p->out;
            p->out += p->chunk;
            p->out_len -= p->chunk;
        } else {
            uint32_t k = p->chunk - p->pend_len;
            if (k > p->out_len) { /* not a whole chunk yet */
                memcpy(p->pend + p->pend_len, p->out, p->out_len);
                p->pend_len += p->out_len;
                p->out_len = 0;
                return EAS_STEADY;
            }
            if (*p->mask_at + 4 > p->mask_pool)
                return EAS_MASKS;
            memcpy(p->pend + p->pend_len, p->out, k);
            p->out += k;
            p->out_len -= k;
            chunk = p->pend;
            p->pend_len = 0; /* its bytes stay there until the next fill */
        }
        why = send_chunk(e, p, chunk);
        if (why)
            return why;
    }
    return EAS_STEADY;
}

/* Seconds since the datagram last read from `fd` reached the host (the kernel stamps the
 * socket's datagrams once asked: call/reader.py asks when it makes the reader); < 0: no stamp
 * (a FIFO, or a socket fed by hand in tests). Only for a timed frame: one system call. */
static double since_arrival(int fd) {
    struct timespec came, now;
    if (fd < 0 || ioctl(fd, SIOCGSTAMPNS, &came) < 0)
        return -1.0;
    clock_gettime(CLOCK_REALTIME, &now);
    return (double)(now.tv_sec - came.tv_sec) + (double)(now.tv_nsec - came.tv_nsec) * 1e-9;
}

static int finish(eas_pump *p, int why) {
    if (why == EAS_STEADY && p->sampling) {
        p->sampling = 0;
        p->sample = eas_now() - p->t0;
        p->latency = p->fifo_frame ? -1.0 : since_arrival(p->in_fd);
        return EAS_SAMPLE;
    }
    return why;
}

/* call/pipeline.py FramePipeline.feed, for a mono stream whose frames only go out. */
static int frame(eas_engine *e, eas_pump *p, const unsigned char *data, uint32_t n) {
    if (!n || (n & 1)) {
        p->malformed++;
        return EAS_STEADY;
    }
    if (data[0] == 0xFF) { /* comfort noise (every byte 0xFF) is silence */
        uint32_t i = 1;
        while (i < n && data[i] == 0xFF)
            i++;
        if (i == n)
            data = silence;
    }
    p->frames_in++;
    if (n > p->last_cap) {
        unsigned char *b = realloc(p->last, n);
        if (b) {
            p->last = b;
            p->last_cap = n;
        }
    }
    if (n <= p->last_cap) {
        memcpy(p->last, data, n);
        p->last_len = n;
    }
    p->sampling = !(p->frames_in & p->sample_mask);
    if (p->sampling)
        p->t0 = eas_now();
    if (p->rs) {
        spx_uint32_t frames = n / (2 * p->channels), in_len = frames;
        spx_uint32_t out_len = e->ocap / (2 * p->channels);
        int rc = speex_resampler_process_interleaved_int(p->rs, (const spx_int16_t *)data, &in_len,
                                                         (spx_int16_t *)e->obuf, &out_len);
        if (rc != 0 || in_len != frames) {
            p->sampling = 0;
            p->err = rc ? rc : -1;
            return EAS_RESAMPLE_ERROR;
        }
        p->out = e->obuf;
        p->out_len = out_len * 2 * p->channels;
    } else {
        p->out = data;
        p->out_len = n;
    }
    return finish(p, emit(e, p));
}

/* FifoReader's wake-up: the frames left of the last read, else one read (once per run: a FIFO
 * with a backlog never holds the loop; the level-triggered set wakes it again), cut into frames;
 * a partial frame stays for the next read. */
static int fifo(eas_engine *e, eas_pump *p) {
    uint32_t size = p->fifo_frame;
    if (p->in_len - p->in_at < size) {
        uint32_t left = p->in_len - p->in_at;
        ssize_t n;
        if (p->run_mark == e->run)
            return EAS_STEADY;
        p->run_mark = e->run;
        if (p->in_at) {
            memmove(p->inbuf, p->inbuf + p->in_at, left);
            p->in_at = 0;
            p->in_len = left;
        }
        do
            n = read(p->in_fd, p->inbuf + left, p->fifo_max);
        while (n < 0 && errno == EINTR);
        if (n < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                return EAS_STEADY;
            p->err = errno;
            return EAS_RECV_ERROR;
        }
        if (n == 0)
            return EAS_EOF;
        p->in_len += (uint32_t)n;
        p->bytes_read += (uint64_t)n;
    }
    while (p->in_len - p->in_at >= size) {
        const unsigned char *data = p->inbuf + p->in_at;
        int why;
        p->in_at += size;
        why = frame(e, p, data, size);
        if (why)
            return why;
    }
    return EAS_STEADY;
}

static int one(eas_engine *e, eas_pump *p) {
    ssize_t n;
    if (p->fifo_frame)
        return fifo(e, p);
    n = recv(p->in_fd, e->rbuf, sizeof e->rbuf, MSG_DONTWAIT);
    if (n < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR || errno == ECONNREFUSED)
            return EAS_STEADY; /* spurious wake-up; an ICMP error */
        p->err = errno;
        return EAS_RECV_ERROR;
    }
    return frame(e, p, e->rbuf, (uint32_t)n);
}

/* Every readable socket, one datagram each per round. Returns the slot of a pump that needs
 * Python (its `why`), or -1 when none is readable any more (or after EAS_ROUNDS rounds).
 * `fresh`: a new wake-up; else go on after the pump just handled. */
int eas_engine_run(eas_engine *e, int fresh) {
    eas_pump *cur = e->cur;
    e->cur = NULL;
    if (fresh) {
        e->n = e->at = e->rounds = 0;
        e->run++;
    } else if (cur && cur->fifo_frame) { /* the rest of the read it stopped in */
        int why = fifo(e, cur);
        if (why) {
            cur->why = why;
            e->cur = cur;
            return cur->slot;
        }
    }
    for (;;) {
        while (e->at < e->n) {
            uint32_t slot = e->evs[e->at++].data.u32;
            eas_pump *p = (int)slot < e->nslots ? e->slots[slot] : NULL;
            int why;
            if (!p)
                continue;
            why = one(e, p);
            if (why) {
                p->why = why;
                e->cur = p;
                return (int)slot;
            }
        }
        if (e->rounds >= EAS_ROUNDS)
            return -1;
        e->rounds++;
        e->n = epoll_wait(e->epfd, e->evs, EAS_MAX_EVENTS, 0);
        e->at = 0;
        if (e->n <= 0) {
            e->n = 0;
            return -1;
        }
    }
}

/* After EAS_MASKS (the pool refilled): the rest of the frame under way. */
int eas_engine_resume(eas_engine *e, eas_pump *p) {
    p->why = finish(p, emit(e, p));
    return p->why;
}

/* One datagram as if it had been received (tests: no socket). */
int eas_pump_feed(eas_engine *e, eas_pump *p, const char *data, uint32_t n) {
    int rc = fit(e, p);
    if (rc)
        return rc;
    if (n > EAS_MAX_DATAGRAM)
        n = EAS_MAX_DATAGRAM;
    memcpy(e->rbuf, data, n);
    p->why = frame(e, p, e->rbuf, n);
    return p->why;
}

/* Tests: the capture takes `room` more bytes (< 0: any), or fails with `err` (!= 0). */
void eas_engine_set_room(eas_engine *e, int64_t room, int err) {
    e->cap_room = room;
    e->cap_errno = err;
}

/* Tests: what the capture holds, emptied. */
uint32_t eas_engine_captured(eas_engine *e, const unsigned char **data) {
    uint32_t n = e->cap_len;
    *data = e->cap;
    e->cap_len = 0;
    return n;
}
