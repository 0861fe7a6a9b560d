/* Small shared helpers: clocks, hex, HMAC-SHA256 and constant-time compare (OpenSSL). */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define UTIL_SHA256_LEN 32

int64_t util_now_ms(void);   /* wall clock, unix milliseconds */
int64_t util_mono_ms(void);  /* monotonic milliseconds */
int64_t util_mono_us(void);  /* monotonic microseconds */
void util_sleep_ms(long ms); /* nanosleep, resumed after signals */

/* Writes 2*len lowercase hex digits and a NUL into out (size >= 2*len+1). */
void util_hex(const uint8_t *in, size_t len, char *out);
/* Decodes exactly 2*out_len hex digits (either case). Returns 0 or -EINVAL. */
int util_unhex(const char *in, size_t in_len, uint8_t *out, size_t out_len);

/* HMAC-SHA256 of data keyed with key into out[32]. Returns 0 or -EIO. */
int util_hmac_sha256(const void *key, size_t key_len, const void *data, size_t data_len,
		     uint8_t out[UTIL_SHA256_LEN]);
/* SHA-256 of data into out[32] (zeros if OpenSSL fails). */
void util_sha256(const void *data, size_t len, uint8_t out[UTIL_SHA256_LEN]);
/* Constant-time equality of two equal-length buffers (CRYPTO_memcmp). */
bool util_ct_equal(const void *a, const void *b, size_t len);

/* Formats unix milliseconds as ISO 8601 UTC "2026-08-12T10:15:30.000Z" (out >= 25 bytes). */
void util_iso8601_ms(int64_t ms, char *out, size_t n);
/* Parses ISO 8601 ("2026-08-12", "2026-08-12T10:15:30.123Z", "... 10:15:30,5+07:00",
 * "...+0700") into unix milliseconds; a time without a zone is read at zone_offset_s east of
 * UTC. Years 1970 to 9999. Returns 0 or -EINVAL. */
int util_parse_iso8601_ms(const char *s, int64_t zone_offset_s, int64_t *ret_ms);
/* ISO 8601 (no zone: UTC) or a plain unix-seconds number, into unix milliseconds. Returns 0
 * or -EINVAL. */
int util_parse_time_ms(const char *s, int64_t *ret_ms);

/* xorshift32: a cheap sequence that spreads retries apart (nothing secret depends on it).
 * util_rand_seed() mixes the clock, the pid and salt (e.g. an object's address) into a
 * non-zero state. */
uint32_t util_rand32(uint32_t *state);
uint32_t util_rand_seed(const void *salt);

/* A stop flag shared between threads (release on set, acquire on read). */
static inline bool util_flag_get(const int *flag)
{
	return __atomic_load_n(flag, __ATOMIC_ACQUIRE) != 0;
}

static inline void util_flag_set(int *flag)
{
	__atomic_store_n(flag, 1, __ATOMIC_RELEASE);
}

/* A growable byte buffer, always NUL-terminated after its len bytes. Zero-initialise it.
 * After a failed allocation it keeps what it had and remembers the failure (oom), so a
 * sequence of appends can be checked once at the end. */
struct util_buf {
	char *p;
	size_t len, cap;
	bool oom;
};

/* Makes room for at least cap bytes (e.g. a known Content-Length): 0 or -ENOMEM. */
int util_buf_reserve(struct util_buf *b, size_t cap);
/* Appends n bytes: 0, or -ENOMEM (nothing appended, oom set). */
int util_buf_add(struct util_buf *b, const void *data, size_t n);
int util_buf_printf(struct util_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* The contents (caller frees; NULL after a failure or when empty) and the buffer emptied. */
char *util_buf_steal(struct util_buf *b, size_t *ret_len);
void util_buf_free(struct util_buf *b);

/* fsyncs the directory holding path (after a rename into it). Returns 0 or -errno. */
int util_fsync_dir(const char *path);

/* Reads a whole small file (limit bytes at most) into a NUL-terminated heap string, trailing
 * newlines removed. Caller frees. Returns 0 or -errno (-EFBIG when over limit). */
int util_read_file(const char *path, size_t limit, char **ret);
