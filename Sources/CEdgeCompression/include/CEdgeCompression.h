#ifndef C_EDGE_COMPRESSION_H
#define C_EDGE_COMPRESSION_H

#include <stddef.h>
#include <stdint.h>

/// Brotli and zstd, loaded at run time from the shared libraries Debian ships as `libbrotli1` and `libzstd1`
/// (`libbrotlienc.so.1`, `libbrotlidec.so.1`, `libzstd.so.1`), with dlopen(3).
///
/// Loading rather than linking keeps building Edge free of the `-dev` packages: `swift build` needs no C header
/// from outside the package, and a machine without one of the libraries still runs Edge, without that coding.
/// Both libraries keep a stable ABI for these functions (brotli's encoder API since 1.0, zstd's advanced
/// streaming API `ZSTD_compressStream2` since 1.4.0), and the prototypes below are theirs.
///
/// Every function is safe to call from any thread; the libraries are opened once, on first use.

/// Whether the brotli encoder (and decoder) could be loaded; 0 when not.
int CEdgeCompression_brotliAvailable(void);
/// Whether zstd could be loaded; 0 when not.
int CEdgeCompression_zstdAvailable(void);

// MARK: brotli (BrotliEncoder*)

/// A new encoder with `quality` (0–11) and window `lgwin` (10–24), in text mode when `text` is not 0; NULL when
/// brotli is not available or memory runs out.
void *CEdgeCompression_brotliCreate(int quality, int lgwin, int text);
/// BrotliEncoderCompressStream: `operation` 0 = process, 1 = flush, 2 = finish. Returns 1 on success.
int CEdgeCompression_brotliCompressStream(
    void *state, int operation, size_t *availableIn, const uint8_t **nextIn, size_t *availableOut, uint8_t **nextOut);
/// BrotliEncoderHasMoreOutput and BrotliEncoderIsFinished.
int CEdgeCompression_brotliHasMoreOutput(void *state);
int CEdgeCompression_brotliIsFinished(void *state);
void CEdgeCompression_brotliDestroy(void *state);
/// BrotliDecoderDecompress (one shot, for tests and tools): 1 on success, with `*decodedSize` set.
int CEdgeCompression_brotliDecompress(const uint8_t *encoded, size_t encodedSize, uint8_t *decoded, size_t *decodedSize);

// MARK: zstd (ZSTD_CCtx)

/// A new compression context at `level` (1–19), with a checksum; `windowLog`, `hashLog` and `chainLog`, when above
/// 0, replace the level's (they bound the context's memory); NULL when zstd is not available.
void *CEdgeCompression_zstdCreate(int level, int windowLog, int hashLog, int chainLog);
/// Tells the context the whole input's size before the first call (the frame then records it).
void CEdgeCompression_zstdSetSourceSize(void *context, unsigned long long size);
/// ZSTD_compressStream2 over the given buffers; `endOp` 0 = continue, 1 = flush, 2 = end. Returns what
/// ZSTD_compressStream2 returns (0 when a flush or end is complete, more to do otherwise), or an error code
/// (CEdgeCompression_zstdIsError).
size_t CEdgeCompression_zstdCompressStream(
    void *context, uint8_t *output, size_t outputSize, size_t *outputPosition,
    const uint8_t *input, size_t inputSize, size_t *inputPosition, int endOp);
int CEdgeCompression_zstdIsError(size_t code);
void CEdgeCompression_zstdFree(void *context);
/// ZSTD_decompress (one shot, for tests and tools): the decoded size, or an error code.
size_t CEdgeCompression_zstdDecompress(uint8_t *output, size_t outputSize, const uint8_t *input, size_t inputSize);

#endif
