/* Float32 kernels for MLX's CPU backend: in-place softmax (last axis), exact GELU, row-wise
 * log-sum-exp and top-k, and attention of a few queries per head against precomputed keys/values
 * (a decoding step's cross-attention; the beams of a segment share their keys and values).
 *
 * MLX's Linux CPU build computes exp and erf one element at a time and runs a decoding
 * step's attention as one small matrix call per head; these loops are vectorized by the
 * compiler (glibc's libmvec supplies SIMD expf/erff), stream keys and values once, and are
 * split over threads. They work on C-contiguous float32 buffers (evaluated mx.arrays).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <float.h>
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__) && defined(__GNUC__)
#define VECTORIZED __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define VECTORIZED
#endif

#define MAX_THREADS 64

VECTORIZED static void softmax_rows(float *x, Py_ssize_t rows, Py_ssize_t n) {
    for (Py_ssize_t r = 0; r < rows; r++) {
        float *p = x + r * n;
        float m = -FLT_MAX; /* not -INFINITY: -ffast-math may fold comparisons with infinities */
        for (Py_ssize_t i = 0; i < n; i++) m = p[i] > m ? p[i] : m;
        float s = 0.f;
#pragma omp simd reduction(+ : s)
        for (Py_ssize_t i = 0; i < n; i++) {
            p[i] = expf(p[i] - m);
            s += p[i];
        }
        float inv = 1.f / s;
#pragma omp simd
        for (Py_ssize_t i = 0; i < n; i++) p[i] *= inv;
    }
}

VECTORIZED static void logsumexp_rows(const float *x, float *out, Py_ssize_t rows, Py_ssize_t n) {
    for (Py_ssize_t r = 0; r < rows; r++) {
        const float *p = x + r * n;
        float m = -FLT_MAX;
        for (Py_ssize_t i = 0; i < n; i++) m = p[i] > m ? p[i] : m;
        float s = 0.f;
        if (m > -FLT_MAX) { /* some element is finite */
#pragma omp simd reduction(+ : s)
            for (Py_ssize_t i = 0; i < n; i++) s += expf(p[i] - m);
        }
        out[r] = m > -FLT_MAX ? m + logf(s) : -INFINITY;
    }
}

/* The k largest values of each row and their indices, largest first; rows with fewer than k
 * finite values are completed with -inf at index 0. */
VECTORIZED static void topk_rows(const float *x, int *idx, float *val, Py_ssize_t rows, Py_ssize_t n, Py_ssize_t k) {
    for (Py_ssize_t r = 0; r < rows; r++) {
        const float *p = x + r * n;
        float *bv = val + r * k;
        int *bi = idx + r * k;
        Py_ssize_t filled = 0;
        for (Py_ssize_t b = 0; b < n; b += 16) { /* blocks whose maximum cannot enter are skipped */
            Py_ssize_t end = b + 16 < n ? b + 16 : n;
            float m = -FLT_MAX;
            for (Py_ssize_t i = b; i < end; i++) m = p[i] > m ? p[i] : m;
            if (filled == k && m <= bv[k - 1]) continue;
            for (Py_ssize_t i = b; i < end; i++) {
                float v = p[i];
                uint32_t bits;
            memcpy(&bits, &v, sizeof bits);
            if (bits == 0xff800000u) continue; /* -inf (masked); tested on the bits: -ffast-math assumes finite values */
                if (filled == k && v <= bv[k - 1]) continue;
                Py_ssize_t j = filled < k ? filled++ : k - 1;
                while (j > 0 && bv[j - 1] < v) {
                    bv[j] = bv[j - 1];
                    bi[j] = bi[j - 1];
                    j--;
                }
                bv[j] = v;
                bi[j] = (int)i;
            }
        }
        for (Py_ssize_t j = filled; j < k; j++) {
            bv[j] = -INFINITY;
            bi[j] = 0;
        }
    }
}

VECTORIZED static void gelu_span(float *x, Py_ssize_t n) {
#pragma omp simd
    for (Py_ssize_t i = 0; i < n; i++) x[i] = 0.5f * x[i] * (1.f + erff(x[i] * 0.70710678118654752f));
}

/* q (units, nq, dim) holds nq queries per unit (head) and receives the output; k, v (units,
 * length, dim). A unit's keys and values are read once for all its queries. */
VECTORIZED static void attend(float *q, const float *k, const float *v, Py_ssize_t units, Py_ssize_t nq,
                              Py_ssize_t length, Py_ssize_t dim, float scale, float *scores, float *out) {
    for (Py_ssize_t h = 0; h < units; h++) {
        float *qh = q + h * nq * dim;
        const float *kh = k + h * length * dim, *vh = v + h * length * dim;
        for (Py_ssize_t t = 0; t < length; t++) {
            const float *kt = kh + t * dim;
            for (Py_ssize_t j = 0; j < nq; j++) {
                const float *qj = qh + j * dim;
                float s = 0.f;
#pragma omp simd reduction(+ : s)
                for (Py_ssize_t d = 0; d < dim; d++) s += qj[d] * kt[d];
                scores[j * length + t] = s * scale;
            }
        }
        softmax_rows(scores, nq, length);
        for (Py_ssize_t i = 0; i < nq * dim; i++) out[i] = 0.f;
        for (Py_ssize_t t = 0; t < length; t++) {
            const float *vt = vh + t * dim;
            for (Py_ssize_t j = 0; j < nq; j++) {
                float w = scores[j * length + t], *oj = out + j * dim;
#pragma omp simd
                for (Py_ssize_t d = 0; d < dim; d++) oj[d] += w * vt[d];
            }
        }
        for (Py_ssize_t i = 0; i < nq * dim; i++) qh[i] = out[i];
    }
}

enum { SOFTMAX, GELU, ATTEND, LOGSUMEXP, TOPK };

typedef struct {
    int kind;
    float *x;               /* softmax rows / gelu elements / attention queries / log-sum-exp outputs */
    const float *k, *v;     /* attention keys and values; log-sum-exp and top-k inputs in k */
    int *idx;               /* top-k indices (values in x) */
    Py_ssize_t count, n;    /* units in this share; softmax row length or attention length */
    Py_ssize_t dim;         /* attention head size; top-k's k */
    Py_ssize_t nq;          /* attention queries per unit */
    float scale;
} Work;

static void *run_work(void *arg) {
    Work *w = (Work *)arg;
    if (w->kind == SOFTMAX) softmax_rows(w->x, w->count, w->n);
    else if (w->kind == GELU) gelu_span(w->x, w->count);
    else if (w->kind == LOGSUMEXP) logsumexp_rows(w->k, w->x, w->count, w->n);
    else if (w->kind == TOPK) topk_rows(w->k, w->idx, w->x, w->count, w->n, w->dim);
    else {
        float *scratch = malloc(sizeof(float) * (size_t)(w->nq * (w->n + w->dim)));
        if (scratch) {
            attend(w->x, w->k, w->v, w->count, w->nq, w->n, w->dim, w->scale, scratch, scratch + w->nq * w->n);
            free(scratch);
        }
    }
    return NULL;
}

/* Split `units` over up to `threads` threads; `job` describes unit 0 and a unit's strides. */
static void parallel(Work job, Py_ssize_t units, Py_ssize_t x_stride, Py_ssize_t kv_stride, int threads) {
    Work work[MAX_THREADS];
    pthread_t tid[MAX_THREADS];
    int created[MAX_THREADS] = {0};
    if (threads < 1) threads = 1;
    if (threads > MAX_THREADS) threads = MAX_THREADS;
    if (threads > units) threads = (int)(units > 0 ? units : 1);
    Py_ssize_t per = (units + threads - 1) / threads, start = 0;
    for (int t = 0; t < threads && start < units; t++) {
        work[t] = job;
        work[t].count = units - start < per ? units - start : per;
        work[t].x = job.x + start * x_stride;
        if (job.kind == ATTEND || job.kind == LOGSUMEXP || job.kind == TOPK) {
            work[t].k = job.k + start * kv_stride;
            if (job.kind == ATTEND) work[t].v = job.v + start * kv_stride;
            if (job.kind == TOPK) work[t].idx = job.idx + start * x_stride;
        }
        start += work[t].count;
        /* the calling thread takes the last share, and any share whose thread fails to start */
        if (start < units && pthread_create(&tid[t], NULL, run_work, &work[t]) == 0) created[t] = 1;
        else run_work(&work[t]);
    }
    for (int t = 0; t < threads; t++)
        if (created[t]) pthread_join(tid[t], NULL);
}

static int get_buffer(PyObject *obj, Py_buffer *view, int writable, const char *format) {
    int flags = PyBUF_C_CONTIGUOUS | PyBUF_FORMAT | (writable ? PyBUF_WRITABLE : 0);
    if (PyObject_GetBuffer(obj, view, flags) < 0) return -1;
    if (view->itemsize != 4 || view->format == NULL || strcmp(view->format, format) != 0) {
        PyBuffer_Release(view);
        PyErr_Format(PyExc_TypeError, "expected a 4-byte '%s' buffer", format);
        return -1;
    }
    return 0;
}

static int get_floats(PyObject *obj, Py_buffer *view, int writable) { return get_buffer(obj, view, writable, "f"); }

static PyObject *softmax_(PyObject *self, PyObject *args) {
    PyObject *obj;
    Py_ssize_t n;
    int threads = 1;
    if (!PyArg_ParseTuple(args, "On|i", &obj, &n, &threads)) return NULL;
    Py_buffer view;
    if (get_floats(obj, &view, 1) < 0) return NULL;
    Py_ssize_t total = view.len / 4;
    if (n <= 0 || total % n != 0) {
        PyBuffer_Release(&view);
        PyErr_SetString(PyExc_ValueError, "last-axis length must divide the buffer");
        return NULL;
    }
    Work job = {SOFTMAX, (float *)view.buf, NULL, NULL, NULL, 0, n, 0, 0, 0.f};
    Py_BEGIN_ALLOW_THREADS parallel(job, total / n, n, 0, threads);
    Py_END_ALLOW_THREADS PyBuffer_Release(&view);
    Py_RETURN_NONE;
}

static PyObject *gelu_(PyObject *self, PyObject *args) {
    PyObject *obj;
    int threads = 1;
    if (!PyArg_ParseTuple(args, "O|i", &obj, &threads)) return NULL;
    Py_buffer view;
    if (get_floats(obj, &view, 1) < 0) return NULL;
    Work job = {GELU, (float *)view.buf, NULL, NULL, NULL, 0, 0, 0, 0, 0.f};
    Py_BEGIN_ALLOW_THREADS parallel(job, view.len / 4, 1, 0, threads);
    Py_END_ALLOW_THREADS PyBuffer_Release(&view);
    Py_RETURN_NONE;
}

static PyObject *attend_(PyObject *self, PyObject *args) {
    PyObject *qo, *ko, *vo;
    Py_ssize_t length, dim, nq;
    float scale;
    int threads = 1;
    if (!PyArg_ParseTuple(args, "OOOnnnf|i", &qo, &ko, &vo, &length, &dim, &nq, &scale, &threads)) return NULL;
    Py_buffer q, k, v;
    if (get_floats(qo, &q, 1) < 0) return NULL;
    if (get_floats(ko, &k, 0) < 0) {
        PyBuffer_Release(&q);
        return NULL;
    }
    if (get_floats(vo, &v, 0) < 0) {
        PyBuffer_Release(&q);
        PyBuffer_Release(&k);
        return NULL;
    }
    Py_ssize_t units = dim > 0 && nq > 0 ? q.len / 4 / (dim * nq) : 0;
    if (dim <= 0 || nq <= 0 || length <= 0 || units * nq * dim * 4 != q.len || k.len != units * length * dim * 4 ||
        v.len != k.len) {
        PyErr_SetString(PyExc_ValueError, "expected q (units, nq, dim) and k, v (units, length, dim)");
    } else {
        Work job = {ATTEND, (float *)q.buf, (const float *)k.buf, (const float *)v.buf, NULL, 0, length, dim, nq, scale};
        Py_BEGIN_ALLOW_THREADS parallel(job, units, nq * dim, length * dim, threads);
        Py_END_ALLOW_THREADS
    }
    PyBuffer_Release(&q);
    PyBuffer_Release(&k);
    PyBuffer_Release(&v);
    if (PyErr_Occurred()) return NULL;
    Py_RETURN_NONE;
}

static PyObject *logsumexp_(PyObject *self, PyObject *args) {
    PyObject *xo, *oo;
    Py_ssize_t n;
    int threads = 1;
    if (!PyArg_ParseTuple(args, "OOn|i", &xo, &oo, &n, &threads)) return NULL;
    Py_buffer x, out;
    if (get_floats(xo, &x, 0) < 0) return NULL;
    if (get_floats(oo, &out, 1) < 0) {
        PyBuffer_Release(&x);
        return NULL;
    }
    Py_ssize_t rows = n > 0 ? x.len / 4 / n : 0;
    if (n <= 0 || rows * n * 4 != x.len || out.len != rows * 4) {
        PyErr_SetString(PyExc_ValueError, "expected x (rows, n) and out (rows,)");
    } else {
        Work job = {LOGSUMEXP, (float *)out.buf, (const float *)x.buf, NULL, NULL, 0, n, 0, 0, 0.f};
        Py_BEGIN_ALLOW_THREADS parallel(job, rows, 1, n, threads);
        Py_END_ALLOW_THREADS
    }
    PyBuffer_Release(&x);
    PyBuffer_Release(&out);
    if (PyErr_Occurred()) return NULL;
    Py_RETURN_NONE;
}

static PyObject *topk_(PyObject *self, PyObject *args) {
    PyObject *xo, *io, *vo;
    Py_ssize_t n, k;
    int threads = 1;
    if (!PyArg_ParseTuple(args, "OOOnn|i", &xo, &io, &vo, &n, &k, &threads)) return NULL;
    Py_buffer x, idx, val;
    if (get_floats(xo, &x, 0) < 0) return NULL;
    if (get_buffer(io, &idx, 1, "i") < 0) {
        PyBuffer_Release(&x);
        return NULL;
    }
    if (get_floats(vo, &val, 1) < 0) {
        PyBuffer_Release(&x);
        PyBuffer_Release(&idx);
        return NULL;
    }
    Py_ssize_t rows = n > 0 ? x.len / 4 / n : 0;
    if (n <= 0 || k <= 0 || k > n || rows * n * 4 != x.len || idx.len != rows * k * 4 || val.len != idx.len) {
        PyErr_SetString(PyExc_ValueError, "expected x (rows, n), indices and values (rows, k), 0 < k <= n");
    } else {
        Work job = {TOPK, (float *)val.buf, (const float *)x.buf, NULL, (int *)idx.buf, 0, n, k, 0, 0.f};
        Py_BEGIN_ALLOW_THREADS parallel(job, rows, k, n, threads);
        Py_END_ALLOW_THREADS
    }
    PyBuffer_Release(&x);
    PyBuffer_Release(&idx);
    PyBuffer_Release(&val);
    if (PyErr_Occurred()) return NULL;
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"softmax_", softmax_, METH_VARARGS, "softmax_(buffer, n, threads=1): softmax over rows of n floats, in place"},
    {"gelu_", gelu_, METH_VARARGS, "gelu_(buffer, threads=1): exact (erf) GELU, in place"},
    {"logsumexp_", logsumexp_, METH_VARARGS, "logsumexp_(x, out, n, threads=1): log-sum-exp of each row of n floats into out"},
    {"topk_", topk_, METH_VARARGS,
     "topk_(x, indices, values, n, k, threads=1): the k largest of each row of n floats, largest first"},
    {"attend_", attend_, METH_VARARGS,
     "attend_(q, k, v, length, dim, nq, scale, threads=1): nq queries per head against that head's k, v; "
     "the output replaces q"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_kernels", NULL, -1, methods};

PyMODINIT_FUNC PyInit__kernels(void) { return PyModule_Create(&module); }
