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
/* Parses ISO 8601 (date, optional time, fraction, Z or +hh:mm) or a plain unix-seconds number
 * into unix milliseconds. Returns 0 or -EINVAL. */
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

/* fsyncs the directory holding path (after a rename into it). Returns 0 or -errno. */
int util_fsync_dir(const char *path);

/* Reads a whole small file (limit bytes at most) into a NUL-terminated heap string, trailing
 * newlines removed. Caller frees. Returns 0 or -errno (-EFBIG when over limit). */
int util_read_file(const char *path, size_t limit, char **ret);
