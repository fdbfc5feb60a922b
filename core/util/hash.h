/* hash.h - wd_hash64 (checksum.c) in pieces, for code that absorbs the
 * 32-byte rounds itself while the bytes are in registers (the lossless
 * codec's vector gather hashes each chunk of output it writes).  Not
 * installed.
 *
 * wd_hash64(p, n, seed) is, exactly:
 *   wd_hash64_start(lanes, seed); for each whole 32-byte round r of p in
 *   order, lane j absorbs the little-endian word v at bytes 8j..8j+7 of r:
 *   lane = rotl(lane + v * K2, 31) * K1; then
 *   wd_hash64_end(lanes, p, n, done) with done = the bytes absorbed so far
 *   (a multiple of 32), which absorbs the remaining whole rounds, folds the
 *   lanes with n and takes the tail. */
#ifndef WDELTA_HASH_H
#define WDELTA_HASH_H

#include <stddef.h>
#include <stdint.h>

#define WD_HASH_K1 0x9E3779B185EBCA87ull
#define WD_HASH_K2 0xC2B2AE3D27D4EB4Full
#define WD_HASH_K3 0x165667B19E3779F9ull

void wd_hash64_start(uint64_t lanes[4], uint64_t seed);
uint64_t wd_hash64_end(const uint64_t lanes[4], const void *data, size_t n, size_t done);

#endif
