/* The fast path of sodadata/encode/codes.py: Mimi codes <-> characters in one pass, with no temporaries.
 *
 * NumPy's per-call overhead (a few microseconds for the handful of calls codes.py needs) is the whole cost of
 * converting a 3-10 s utterance, so these two functions do the work of a call in one loop. They only ever
 * succeed on well-formed input: on anything else (a range error, an unusual dtype, a non-buffer) they return
 * None / False and codes.py's NumPy path takes over, which is the one place that raises and words the errors.
 * tests/test_codes.py runs every test on both paths; tests/test_codes_native.py compares them on random good
 * and bad input (same strings, codes and error messages).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#define AUDIO_BASE 0xE000
#define CODEBOOK_SIZE 2048
#define NUM_CODEBOOKS 8

/* The element type of a buffer: a plain native integer of 1, 2, 4 or 8 bytes (signedness in `is_signed`), or 0. */
static int int_size(const char *format, Py_ssize_t itemsize, int *is_signed) {
    if (format == NULL) return 0;
    if (*format == '@' || *format == '=') format++;
#if PY_LITTLE_ENDIAN
    else if (*format == '<') format++;
#endif
    if (format[0] == '\0' || format[1] != '\0') return 0;
    switch (format[0]) {  /* the size comes from the buffer: 'l' is 4 or 8 bytes depending on the platform */
        case 'b': case 'h': case 'i': case 'l': case 'q': case 'n': *is_signed = 1; break;
        case 'B': case 'H': case 'I': case 'L': case 'Q': case 'N': *is_signed = 0; break;
        default: return 0;
    }
    return (itemsize == 1 || itemsize == 2 || itemsize == 4 || itemsize == 8) ? (int)itemsize : 0;
}

/* One loop per (element type, character width): the loop body is a load, an add and a range check, so a call
 * through a pointer per element would double its cost. Negative codes convert to huge unsigned values and fail
 * the same check as codes >= 2048. */
#define CONVERT(ELEM, CHAR)                                                                 \
    do {                                                                                    \
        CHAR *dst = (CHAR *)out;                                                            \
        for (Py_ssize_t t = 0; t < frames; t++) {                                           \
            const char *col = base + t * s1;                                                \
            for (Py_ssize_t i = 0; i < n; i++) {                                            \
                ELEM v;                                                                     \
                memcpy(&v, col + i * s0, sizeof v);                                         \
                if ((uint64_t)(int64_t)v >= CODEBOOK_SIZE) return 0;                        \
                *dst++ = (CHAR)(AUDIO_BASE + i * CODEBOOK_SIZE + (int64_t)v);               \
            }                                                                               \
        }                                                                                   \
        return 1;                                                                           \
    } while (0)

#define CONVERT_TO(CHAR)                                                                    \
    switch (size * (is_signed ? 1 : -1)) {                                                  \
        case 1: CONVERT(int8_t, CHAR);                                                      \
        case -1: CONVERT(uint8_t, CHAR);                                                    \
        case 2: CONVERT(int16_t, CHAR);                                                     \
        case -2: CONVERT(uint16_t, CHAR);                                                   \
        case 4: CONVERT(int32_t, CHAR);                                                     \
        case -4: CONVERT(uint32_t, CHAR);                                                   \
        case 8: CONVERT(int64_t, CHAR);                                                     \
        case -8: CONVERT(uint64_t, CHAR); /* above INT64_MAX: negative as int64, huge as uint64 */ \
    }                                                                                       \
    return 0

static int convert(void *out, int wide, const char *base, Py_ssize_t n, Py_ssize_t frames, Py_ssize_t s0,
                   Py_ssize_t s1, int size, int is_signed) {
    if (wide) {
        CONVERT_TO(Py_UCS4);
    } else {
        CONVERT_TO(Py_UCS2);
    }
}

/* codes_to_chars(codes) -> str | None
 * codes: an object exporting a 2-D integer buffer (n_codebooks, frames), any strides. None when it cannot be
 * converted here (not such a buffer, 0 or more than 8 codebooks, a code outside [0, 2048)). */
static PyObject *codes_to_chars(PyObject *self, PyObject *obj) {
    Py_buffer view;
    if (PyObject_GetBuffer(obj, &view, PyBUF_STRIDES | PyBUF_FORMAT) != 0) {
        PyErr_Clear();
        Py_RETURN_NONE;
    }
    PyObject *result = NULL;
    int is_signed = 0;
    const int size = int_size(view.format, view.itemsize, &is_signed);
    if (size == 0 || view.ndim != 2 || view.shape[0] < 1 || view.shape[0] > NUM_CODEBOOKS) goto none;
    const Py_ssize_t n = view.shape[0], frames = view.shape[1];
    /* Python strings are stored in their narrowest kind: codebooks 0-3 all lie below U+10000 (2 bytes a
     * character), codebook 4 and up above it (4 bytes) */
    const int wide = n > 4 && frames > 0;
    result = PyUnicode_New(n * frames, wide ? 0x10FFFF : (frames > 0 ? 0xFFFF : 0));
    if (result == NULL || frames == 0) goto done;
    if (!convert(PyUnicode_DATA(result), wide, (const char *)view.buf, n, frames, view.strides[0],
                 view.strides[1], size, is_signed)) {
        Py_CLEAR(result);
        goto none;
    }
    goto done;
none:
    result = Py_NewRef(Py_None);
done:
    PyBuffer_Release(&view);
    return result;
}

/* One loop per character width (see CONVERT): a check per character, and the code written codebook-major. */
#define CHECK_SPAN(NAME, CHAR)                                                                     \
    static int NAME(const void *data, long n, Py_ssize_t frames, int64_t *out) {                    \
        const CHAR *src = (const CHAR *)data;                                                       \
        for (Py_ssize_t t = 0; t < frames; t++) {                                                   \
            for (long i = 0; i < n; i++) {                                                          \
                const int64_t code = (int64_t)*src++ - AUDIO_BASE - i * CODEBOOK_SIZE;              \
                if ((uint64_t)code >= CODEBOOK_SIZE) return 0;                                      \
                if (out) out[i * frames + t] = code;                                                \
            }                                                                                       \
        }                                                                                           \
        return 1;                                                                                   \
    }
CHECK_SPAN(check_span_2, Py_UCS2)
CHECK_SPAN(check_span_4, Py_UCS4)

/* span_codes(text, n, out) -> bool
 * True when text is a well-formed span of n codebooks; then, if out is not None (a writable C-contiguous int64
 * buffer of n * len(text) / n items), out holds the codes codebook-major. False on anything else. */
static PyObject *span_codes(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "span_codes(text: str, n: int, out: int64 buffer | None)");
        return NULL;
    }
    /* anything unusual is for the NumPy path to judge (and word) */
    if (!PyUnicode_Check(args[0]) || !PyLong_Check(args[1])) Py_RETURN_FALSE;
    PyObject *text = args[0];
    int overflow = 0;
    const long n = PyLong_AsLongAndOverflow(args[1], &overflow);
    if (overflow || n < 1 || n > NUM_CODEBOOKS) Py_RETURN_FALSE;
    const Py_ssize_t len = PyUnicode_GET_LENGTH(text);
    if (len % n) Py_RETURN_FALSE;
    const Py_ssize_t frames = len / n;
    const int kind = PyUnicode_KIND(text);
    const void *data = PyUnicode_DATA(text);

    Py_buffer view;
    int64_t *out = NULL;
    if (args[2] != Py_None) {
        if (PyObject_GetBuffer(args[2], &view, PyBUF_C_CONTIGUOUS | PyBUF_WRITABLE | PyBUF_FORMAT) != 0) return NULL;
        int is_signed = 0;
        if (int_size(view.format, view.itemsize, &is_signed) != 8 || !is_signed || view.len != len * 8) {
            PyBuffer_Release(&view);
            PyErr_SetString(PyExc_ValueError, "out must be a C-contiguous int64 buffer of len(text) items");
            return NULL;
        }
        out = (int64_t *)view.buf;
    }
    int ok = 1;
    switch (kind) {  /* a well-formed span is 2-byte (codebooks 0-3 only) or 4-byte; 1-byte only when empty */
        case PyUnicode_2BYTE_KIND: ok = check_span_2(data, n, frames, out); break;
        case PyUnicode_4BYTE_KIND: ok = check_span_4(data, n, frames, out); break;
        default: ok = len == 0;
    }
    if (out) PyBuffer_Release(&view);
    return PyBool_FromLong(ok);
}

static PyMethodDef methods[] = {
    {"codes_to_chars", (PyCFunction)codes_to_chars, METH_O, "Codes (n, frames) -> frame-major str, or None."},
    {"span_codes", (PyCFunction)(void (*)(void))span_codes, METH_FASTCALL,
     "Check a span of n codebooks and optionally write its codes into an int64 buffer; True if well-formed."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "sodadata.encode._codes", NULL, 0, methods};

PyMODINIT_FUNC PyInit__codes(void) { return PyModule_Create(&module); }
