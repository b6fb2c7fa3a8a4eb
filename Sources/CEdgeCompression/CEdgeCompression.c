#include "CEdgeCompression.h"

#include <dlfcn.h>
#include <pthread.h>

// The libraries' own prototypes (brotli/encode.h, brotli/decode.h, zstd.h), as function-pointer types.
typedef void *(*BrotliEncoderCreateInstanceFunction)(void *, void *, void *);
typedef int (*BrotliEncoderSetParameterFunction)(void *, int, uint32_t);
typedef int (*BrotliEncoderCompressStreamFunction)(void *, int, size_t *, const uint8_t **, size_t *, uint8_t **, size_t *);
typedef int (*BrotliEncoderStateFunction)(void *);
typedef void (*BrotliEncoderDestroyInstanceFunction)(void *);
typedef int (*BrotliDecoderDecompressFunction)(size_t, const uint8_t *, size_t *, uint8_t *);

typedef struct {
    const void *src;
    size_t size;
    size_t pos;
} ZSTDInBuffer;
typedef struct {
    void *dst;
    size_t size;
    size_t pos;
} ZSTDOutBuffer;
typedef void *(*ZSTDCreateCCtxFunction)(void);
typedef size_t (*ZSTDCCtxSetParameterFunction)(void *, int, int);
typedef size_t (*ZSTDCCtxSetPledgedSrcSizeFunction)(void *, unsigned long long);
typedef size_t (*ZSTDCompressStream2Function)(void *, ZSTDOutBuffer *, ZSTDInBuffer *, int);
typedef unsigned (*ZSTDIsErrorFunction)(size_t);
typedef size_t (*ZSTDFreeCCtxFunction)(void *);
typedef size_t (*ZSTDDecompressFunction)(void *, size_t, const void *, size_t);

// Values from the headers.
enum {
    BROTLI_PARAM_MODE = 0,
    BROTLI_PARAM_QUALITY = 1,
    BROTLI_PARAM_LGWIN = 2,
    BROTLI_MODE_GENERIC = 0,
    BROTLI_MODE_TEXT = 1,
    BROTLI_DECODER_RESULT_SUCCESS = 1,
    ZSTD_c_compressionLevel = 100,
    ZSTD_c_windowLog = 101,
    ZSTD_c_hashLog = 102,
    ZSTD_c_chainLog = 103,
    ZSTD_c_checksumFlag = 201,
};

static struct {
    BrotliEncoderCreateInstanceFunction create;
    BrotliEncoderSetParameterFunction setParameter;
    BrotliEncoderCompressStreamFunction compressStream;
    BrotliEncoderStateFunction hasMoreOutput;
    BrotliEncoderStateFunction isFinished;
    BrotliEncoderDestroyInstanceFunction destroy;
    BrotliDecoderDecompressFunction decompress;
} brotli;

static struct {
    ZSTDCreateCCtxFunction create;
    ZSTDCCtxSetParameterFunction setParameter;
    ZSTDCCtxSetPledgedSrcSizeFunction setPledgedSourceSize;
    ZSTDCompressStream2Function compressStream2;
    ZSTDIsErrorFunction isError;
    ZSTDFreeCCtxFunction free;
    ZSTDDecompressFunction decompress;
} zstd;

static int brotliLoaded = 0;
static int zstdLoaded = 0;
static pthread_once_t loadOnce = PTHREAD_ONCE_INIT;

static void load(void) {
    void *encoder = dlopen("libbrotlienc.so.1", RTLD_NOW | RTLD_LOCAL);
    void *decoder = dlopen("libbrotlidec.so.1", RTLD_NOW | RTLD_LOCAL);
    if (encoder && decoder) {
        brotli.create = (BrotliEncoderCreateInstanceFunction)dlsym(encoder, "BrotliEncoderCreateInstance");
        brotli.setParameter = (BrotliEncoderSetParameterFunction)dlsym(encoder, "BrotliEncoderSetParameter");
        brotli.compressStream = (BrotliEncoderCompressStreamFunction)dlsym(encoder, "BrotliEncoderCompressStream");
        brotli.hasMoreOutput = (BrotliEncoderStateFunction)dlsym(encoder, "BrotliEncoderHasMoreOutput");
        brotli.isFinished = (BrotliEncoderStateFunction)dlsym(encoder, "BrotliEncoderIsFinished");
        brotli.destroy = (BrotliEncoderDestroyInstanceFunction)dlsym(encoder, "BrotliEncoderDestroyInstance");
        brotli.decompress = (BrotliDecoderDecompressFunction)dlsym(decoder, "BrotliDecoderDecompress");
        brotliLoaded = brotli.create && brotli.setParameter && brotli.compressStream && brotli.hasMoreOutput
            && brotli.isFinished && brotli.destroy && brotli.decompress;
    }
    void *library = dlopen("libzstd.so.1", RTLD_NOW | RTLD_LOCAL);
    if (library) {
        zstd.create = (ZSTDCreateCCtxFunction)dlsym(library, "ZSTD_createCCtx");
        zstd.setParameter = (ZSTDCCtxSetParameterFunction)dlsym(library, "ZSTD_CCtx_setParameter");
        zstd.setPledgedSourceSize = (ZSTDCCtxSetPledgedSrcSizeFunction)dlsym(library, "ZSTD_CCtx_setPledgedSrcSize");
        zstd.compressStream2 = (ZSTDCompressStream2Function)dlsym(library, "ZSTD_compressStream2");
        zstd.isError = (ZSTDIsErrorFunction)dlsym(library, "ZSTD_isError");
        zstd.free = (ZSTDFreeCCtxFunction)dlsym(library, "ZSTD_freeCCtx");
        zstd.decompress = (ZSTDDecompressFunction)dlsym(library, "ZSTD_decompress");
        zstdLoaded = zstd.create && zstd.setParameter && zstd.setPledgedSourceSize && zstd.compressStream2
            && zstd.isError && zstd.free && zstd.decompress;
    }
}

int CEdgeCompression_brotliAvailable(void) {
    pthread_once(&loadOnce, load);
    return brotliLoaded;
}

int CEdgeCompression_zstdAvailable(void) {
    pthread_once(&loadOnce, load);
    return zstdLoaded;
}

void *CEdgeCompression_brotliCreate(int quality, int lgwin, int text) {
    if (!CEdgeCompression_brotliAvailable()) return NULL;
    void *state = brotli.create(NULL, NULL, NULL);
    if (!state) return NULL;
    brotli.setParameter(state, BROTLI_PARAM_QUALITY, (uint32_t)quality);
    brotli.setParameter(state, BROTLI_PARAM_LGWIN, (uint32_t)lgwin);
    brotli.setParameter(state, BROTLI_PARAM_MODE, text ? BROTLI_MODE_TEXT : BROTLI_MODE_GENERIC);
    return state;
}

int CEdgeCompression_brotliCompressStream(
    void *state, int operation, size_t *availableIn, const uint8_t **nextIn, size_t *availableOut, uint8_t **nextOut) {
    return brotli.compressStream(state, operation, availableIn, nextIn, availableOut, nextOut, NULL);
}

int CEdgeCompression_brotliHasMoreOutput(void *state) { return brotli.hasMoreOutput(state); }

int CEdgeCompression_brotliIsFinished(void *state) { return brotli.isFinished(state); }

void CEdgeCompression_brotliDestroy(void *state) {
    if (state) brotli.destroy(state);
}

int CEdgeCompression_brotliDecompress(const uint8_t *encoded, size_t encodedSize, uint8_t *decoded, size_t *decodedSize) {
    if (!CEdgeCompression_brotliAvailable()) return 0;
    return brotli.decompress(encodedSize, encoded, decodedSize, decoded) == BROTLI_DECODER_RESULT_SUCCESS;
}

void *CEdgeCompression_zstdCreate(int level, int windowLog, int hashLog, int chainLog) {
    if (!CEdgeCompression_zstdAvailable()) return NULL;
    void *context = zstd.create();
    if (!context) return NULL;
    zstd.setParameter(context, ZSTD_c_compressionLevel, level);
    zstd.setParameter(context, ZSTD_c_checksumFlag, 1);
    if (windowLog > 0) zstd.setParameter(context, ZSTD_c_windowLog, windowLog);
    if (hashLog > 0) zstd.setParameter(context, ZSTD_c_hashLog, hashLog);
    if (chainLog > 0) zstd.setParameter(context, ZSTD_c_chainLog, chainLog);
    return context;
}

void CEdgeCompression_zstdSetSourceSize(void *context, unsigned long long size) {
    zstd.setPledgedSourceSize(context, size);
}

size_t CEdgeCompression_zstdCompressStream(
    void *context, uint8_t *output, size_t outputSize, size_t *outputPosition,
    const uint8_t *input, size_t inputSize, size_t *inputPosition, int endOp) {
    ZSTDOutBuffer out = {.dst = output, .size = outputSize, .pos = *outputPosition};
    ZSTDInBuffer in = {.src = input, .size = inputSize, .pos = *inputPosition};
    size_t result = zstd.compressStream2(context, &out, &in, endOp);
    *outputPosition = out.pos;
    *inputPosition = in.pos;
    return result;
}

int CEdgeCompression_zstdIsError(size_t code) {
    // ZSTD_isError is (code > (size_t)-ZSTD_error_maxCode); the fallback serves a call made without the library.
    return zstd.isError ? zstd.isError(code) != 0 : code > (size_t)-120;
}

void CEdgeCompression_zstdFree(void *context) {
    if (context) zstd.free(context);
}

size_t CEdgeCompression_zstdDecompress(uint8_t *output, size_t outputSize, const uint8_t *input, size_t inputSize) {
    if (!CEdgeCompression_zstdAvailable()) return (size_t)-1;
    return zstd.decompress(output, outputSize, input, inputSize);
}
