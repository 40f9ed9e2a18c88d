/* The compiled TokenMonster engine: normalization (SPEC §3, §4.2), the greedy scan with
 * look-ahead (SPEC §5.3), decode and the delete-marker pass of the stream decoder, behind
 * remote_code/tokenmonster.py's Vocab.
 *
 * Written from SPEC.md and from our own engines (remote_code/tokenmonster.py and the naive port
 * in tests/tokenmonster_reference.py, which this follows step by step), not from the
 * TokenMonster reference sources. The Unicode data stays in Python: the normalizer asks the
 * pure engine's table about each non-ASCII code point (once; the table keeps the answer), so
 * there is one place where Unicode tables are consulted.
 *
 * The vocabulary is parsed and validated in Python; Scanner() receives the parsed tables. Longest
 * match walks a trie kept as one open-addressing hash table of (node, byte) -> child. encode()
 * copies nothing and releases the GIL while it scans (the input is an immutable bytes object
 * that the call holds a reference to; the Scanner's tables are never written after __init__).
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define ABI_VERSION 2
#define NEG (-1000000)

typedef struct {
    PyObject_HEAD
    int n_entries;
    int maxlen;
    int has_delete, delete_id;
    int has_unk, unk_id;
    int32_t *flags, *nwords, *alt1, *alt2, *ids, *key_len;
    uint8_t bc[256];
    /* the trie while it is built (freed once `trie` is laid out): node 0 is the root,
     * term[node] = entry index or -1, a hash of (node << 8 | byte) + 1 -> child (key 0 = empty
     * slot), and the root's children looked up directly */
    int32_t *term;
    int n_nodes;
    uint64_t *hkeys;
    int32_t *hvals;
    uint64_t hmask;
    int32_t root_child[256];
    /* the trie as the scan reads it: one int32 array in which a node is a block at its offset,
     * laid out depth first (so a walk down a chain of single children reads memory in order):
     *   [entry or -1] [child count c, or -1 for a row], then
     *   for 1 to LIST_MAX children: their bytes (two words, zero-padded) and their offsets;
     *   for a row (a node with more children): 256 offsets, -1 where there is no child.
     * A step reads one block, mostly one cache line, and finds a listed child without a loop
     * (child_index). The root is at offset 0. */
    int32_t *trie;
    int32_t space_node; /* offset of the root's child for 0x20, or -1 */
    /* per entry and alternative (slot 0, 1): the walk from the root over the part of the
     * entry's key after the alternative, done once at load (SPEC §5.3's branches 2 and 3
     * start there). sw_node -2: not a prefix (walk normally); -1: the walk dies inside the key */
    int32_t *sw_node, *sw_best, *sw_best_len, *sw_consumed;
    /* per entry: the trie node of " " + its key, or -1 when no key starts so. A spaced branch
     * (SPEC §5.3) only counts when its token is longer than " " + the plain token it competes
     * with, so its walk starts there, at the end of that token */
    int32_t *spaced_node;
    /* decoding */
    Py_ssize_t n_ids;
    PyObject **table; /* bytes per id (new references) */
    PyObject **id_objects; /* the int of each id, shared by every list encode returns */
    /* normalization: capcode level, NFD or not, and the pure engine's per-code-point table */
    int capcode, nfd;
    PyObject *chars;
} Scanner;

static inline uint64_t mix(uint64_t k) {
    k ^= k >> 31;
    k *= 0x9E3779B97F4A7C15ULL;
    k ^= k >> 29;
    return k;
}

static inline int32_t child_of(const Scanner *s, int32_t node, uint8_t b) {
    if (node == 0)
        return s->root_child[b];
    uint64_t key = ((uint64_t)node << 8 | b) + 1;
    uint64_t h = mix(key) & s->hmask;
    for (;;) {
        uint64_t k = s->hkeys[h];
        if (k == key)
            return s->hvals[h];
        if (k == 0)
            return -1;
        h = (h + 1) & s->hmask;
    }
}

static void hash_put(Scanner *s, int32_t node, uint8_t b, int32_t child) {
    uint64_t key = ((uint64_t)node << 8 | b) + 1;
    uint64_t h = mix(key) & s->hmask;
    while (s->hkeys[h] != 0 && s->hkeys[h] != key)
        h = (h + 1) & s->hmask;
    s->hkeys[h] = key;
    s->hvals[h] = child;
}

#define LIST_MAX 8 /* a node with more children than this gets a 256-entry row */
#define TERM(s, node) ((s)->trie[node])

#if (defined(__GNUC__) || defined(__clang__)) && defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
/* where b is among the first c of the 8 bytes: the classic "has a zero byte" test on bytes ^ b,
 * whose lowest flagged byte is the first match (a borrow only flags bytes above a zero) */
static const uint64_t first_bytes[LIST_MAX + 1] = {
    0, 0x80, 0x8080, 0x808080, 0x80808080, 0x8080808080ULL, 0x808080808080ULL, 0x80808080808080ULL,
    0x8080808080808080ULL,
};
static inline int child_index(const int32_t *bytes_words, int32_t c, uint8_t b) {
    uint64_t bytes;
    memcpy(&bytes, bytes_words, 8);
    uint64_t x = bytes ^ (0x0101010101010101ULL * b);
    uint64_t found = (x - 0x0101010101010101ULL) & ~x & first_bytes[c];
    return found ? __builtin_ctzll(found) >> 3 : -1;
}
#else
static inline int child_index(const int32_t *bytes_words, int32_t c, uint8_t b) {
    const uint8_t *bytes = (const uint8_t *)bytes_words;
    for (int k = 0; k < c; k++)
        if (bytes[k] == b)
            return k;
    return -1;
}
#endif

/* the child of the node at offset `node` for byte b: its offset, or -1 */
static inline int32_t step(const Scanner *s, int32_t node, uint8_t b) {
    const int32_t *block = s->trie + node;
    int32_t c = block[1];
    if (c < 0)
        return block[2 + b];
    int k = child_index(block + 2, c, b);
    return k < 0 ? -1 : block[4 + k];
}

/* Longest key that is a prefix of data[p:n], continuing a walk that has matched k bytes and is
 * at `node` (k = 0, node = 0: a fresh walk): entry (or -1) and its length. */
static inline int32_t longest_from(const Scanner *s, const uint8_t *data, Py_ssize_t p, Py_ssize_t n, int32_t node,
                                   int32_t best, int best_len, int k, int *len_out) {
    Py_ssize_t stop = p + s->maxlen < n ? p + s->maxlen : n;
    for (Py_ssize_t q = p + k; q < stop; q++) {
        node = step(s, node, data[q]);
        if (node < 0)
            break;
        if (TERM(s, node) >= 0) {
            best = TERM(s, node);
            best_len = (int)(q - p + 1);
        }
    }
    *len_out = best_len;
    return best;
}

/* Longest key that is a prefix of data[p:n]: entry (or -1) and its length. */
static inline int32_t longest(const Scanner *s, const uint8_t *data, Py_ssize_t p, Py_ssize_t n, int *len_out) {
    return longest_from(s, data, p, n, 0, -1, 0, 0, len_out);
}

/* The longest key that is a prefix of " " + data[p:] and longer than " " + the entry `plain`,
 * which data[p:] starts with: the entry (or -1) and its length with the space. */
static inline int32_t longer_spaced(const Scanner *s, const uint8_t *data, Py_ssize_t p, Py_ssize_t n, int32_t plain,
                                    int *len_out) {
    int32_t node = s->spaced_node[plain], best = -1;
    int best_len = 0;
    Py_ssize_t stop = p + s->maxlen - 1 < n ? p + s->maxlen - 1 : n;
    for (Py_ssize_t q = p + s->key_len[plain]; node >= 0 && q < stop; q++) {
        node = step(s, node, data[q]);
        if (node >= 0 && TERM(s, node) >= 0) {
            best = TERM(s, node);
            best_len = (int)(q - p + 2);
        }
    }
    *len_out = best_len;
    return best;
}

static inline int imax0(int x) { return x > 0 ? x : 0; }

/* SPEC §5.2's scores, as in tests/tokenmonster_reference.py */
static inline int score_base(int t, int f1, int w1, int f2, int w2, int nb) {
    return t + (f1 >> 7) + (f2 >> 7) + imax0(w1 - 1) + imax0(w2 - 1) + ((nb >> 2) & 1)
           + 100 * (w1 + w2 + (nb >> 3))
           - 100 * (((f1 >> 3) & 1) & ((f2 >> 4) & 1))
           - 3 * ((f2 & 1) & (nb & 1));
}

static inline int score_plain(int t, int f1, int w1, int f2, int w2, int nb) {
    return score_base(t, f1, w1, f2, w2, nb) + ((f2 >> 2) & 1) - 103 * ((f1 & 1) & ((f2 >> 1) & 1));
}

static inline int score_spaced(int t, int f1, int w1, int f2, int w2, int nb) {
    return score_base(t, f1, w1, f2, w2, nb) - 103 * (f1 & 1) - 1;
}

static inline int penalty(int t, int L) { return t < L ? 100 : (t == L ? 10000 : 0); }

typedef struct {
    int32_t *ids;
    Py_ssize_t n, cap;
    int failed;
} IdBuf;

static inline void push(IdBuf *b, int32_t v) {
    if (b->n == b->cap) {
        Py_ssize_t cap = b->cap ? b->cap * 2 : 256;
        int32_t *grown = realloc(b->ids, (size_t)cap * sizeof(int32_t));
        if (!grown) {
            b->failed = 1;
            return;
        }
        b->ids = grown;
        b->cap = cap;
    }
    b->ids[b->n++] = v;
}

/* The scan of SPEC §5.3; runs without the GIL. Returns the count of bytes no token covered. */
static Py_ssize_t scan(const Scanner *s, const uint8_t *data, Py_ssize_t n, IdBuf *out) {
    const int32_t *flags = s->flags, *nwords = s->nwords, *ids = s->ids;
    const uint8_t *bc = s->bc;
    Py_ssize_t missing = 0, i = 0;
#define CLS(q) ((q) < n ? bc[data[q]] : bc[0])
    while (i < n && !out->failed) {
        int L;
        int32_t cur = longest(s, data, i, n, &L);
        int fd = 0;
        if (cur < 0) {
            if (s->has_unk)
                push(out, s->unk_id);
            missing++;
            i++;
            continue;
        }
        for (;;) {
            Py_ssize_t j = i + L;
            if (j >= n || ((flags[cur] & 32) && bc[data[j]] == 12))
                break;
            int sc[6] = {NEG, NEG, NEG, NEG, NEG, NEG};
            /* per branch: the token emitted first, how far it advances, the next token and length */
            int32_t emit[6], next[6];
            int adv[6], nlen[6];
            int f1 = flags[cur], w1 = nwords[cur] - fd;

            int l1;
            int32_t n1 = longest(s, data, j, n, &l1);
            if (n1 >= 0) {
                int nb = CLS(j + l1);
                sc[0] = score_plain(L + l1, f1, w1, flags[n1], nwords[n1], nb);
                emit[0] = cur; adv[0] = L; next[0] = n1; nlen[0] = l1;
                if (s->has_delete && (flags[n1] & 2) && nb == 1 && nwords[n1] == 0) {
                    int k;
                    int32_t m = longer_spaced(s, data, j, n, n1, &k);
                    if (m >= 0) {
                        k -= 1;
                        sc[3] = score_spaced(L + k, f1, w1, flags[m], nwords[m], CLS(j + k));
                        emit[3] = cur; adv[3] = L; next[3] = m; nlen[3] = k;
                    }
                }
            }
            if (s->alt1[cur] >= 0) {
                for (int slot = 1; slot <= 2; slot++) {
                    int32_t a = slot == 1 ? s->alt1[cur] : s->alt2[cur];
                    if (a < 0)
                        break;
                    int la = s->key_len[a] - fd;
                    Py_ssize_t q = i + la;
                    int l2;
                    int32_t n2;
                    Py_ssize_t w = (Py_ssize_t)cur * 2 + slot - 1;
                    int32_t wnode = s->sw_node[w];
                    if (wnode == -2)
                        n2 = longest(s, data, q, n, &l2);
                    else if (wnode == -1) {
                        n2 = s->sw_best[w];
                        l2 = s->sw_best_len[w];
                    } else
                        n2 = longest_from(s, data, q, n, wnode, s->sw_best[w], s->sw_best_len[w], s->sw_consumed[w], &l2);
                    if (n2 < 0)
                        continue;
                    int t = la + l2;
                    int nb = CLS(q + l2);
                    int fa = flags[a], wa = nwords[a] - fd;
                    sc[slot] = score_plain(t, fa, wa, flags[n2], nwords[n2], nb) - penalty(t, L);
                    emit[slot] = a; adv[slot] = la; next[slot] = n2; nlen[slot] = l2;
                    if (s->has_delete && (flags[n2] & 2) && nb == 1 && nwords[n2] == 0) {
                        int k;
                        int32_t m = longer_spaced(s, data, q, n, n2, &k);
                        if (m >= 0) {
                            k -= 1;
                            t = la + k;
                            sc[slot + 3] = score_spaced(t, fa, wa, flags[m], nwords[m], CLS(q + k)) - penalty(t, L);
                            emit[slot + 3] = a; adv[slot + 3] = la; next[slot + 3] = m; nlen[slot + 3] = k;
                        }
                    }
                }
            }
            int best = sc[0], chosen = 0;
            for (int o = 1; o < 6; o++) /* ties go to the first branch in this order */
                if (sc[o] > best) {
                    best = sc[o];
                    chosen = o;
                }
            if (best == NEG)
                break;
            push(out, ids[emit[chosen]]);
            if (chosen >= 3)
                push(out, s->delete_id);
            i += adv[chosen];
            cur = next[chosen];
            L = nlen[chosen];
            fd = chosen >= 3;
        }
        push(out, ids[cur]);
        i += L;
    }
#undef CLS
    return missing;
}

/* ---------------------------------------------------------------------------------------- */

static int read_int_list(PyObject *seq, int32_t **dst, Py_ssize_t n, const char *what) {
    PyObject *fast = PySequence_Fast(seq, what);
    if (!fast)
        return -1;
    if (PySequence_Fast_GET_SIZE(fast) != n) {
        PyErr_Format(PyExc_ValueError, "Scanner: %s has %zd items, expected %zd", what, PySequence_Fast_GET_SIZE(fast), n);
        Py_DECREF(fast);
        return -1;
    }
    *dst = PyMem_Calloc(n ? (size_t)n : 1, sizeof(int32_t));
    if (!*dst) {
        Py_DECREF(fast);
        PyErr_NoMemory();
        return -1;
    }
    for (Py_ssize_t k = 0; k < n; k++) {
        long v = PyLong_AsLong(PySequence_Fast_GET_ITEM(fast, k));
        if (v == -1 && PyErr_Occurred()) {
            Py_DECREF(fast);
            return -1;
        }
        (*dst)[k] = (int32_t)v;
    }
    Py_DECREF(fast);
    return 0;
}

static void Scanner_dealloc(Scanner *self) {
    PyMem_Free(self->flags);
    PyMem_Free(self->nwords);
    PyMem_Free(self->alt1);
    PyMem_Free(self->alt2);
    PyMem_Free(self->ids);
    PyMem_Free(self->key_len);
    PyMem_Free(self->term);
    PyMem_Free(self->trie);
    PyMem_Free(self->sw_node);
    PyMem_Free(self->sw_best);
    PyMem_Free(self->sw_best_len);
    PyMem_Free(self->sw_consumed);
    PyMem_Free(self->spaced_node);
    PyMem_Free(self->hkeys);
    PyMem_Free(self->hvals);
    if (self->table) {
        for (Py_ssize_t k = 0; k < self->n_ids; k++)
            Py_XDECREF(self->table[k]);
        PyMem_Free(self->table);
    }
    if (self->id_objects) {
        for (Py_ssize_t k = 0; k < self->n_ids; k++)
            Py_XDECREF(self->id_objects[k]);
        PyMem_Free(self->id_objects);
    }
    Py_XDECREF(self->chars);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int build_arrays(Scanner *self, PyObject *fast_keys);

/* Scanner(keys, flags, nwords, alt1, alt2, ids, begin_class, delete_id, unk_id, max_token_len,
 *         decode_table, capcode, nfd, chars): tables as Vocab parsed them (alt -1 and None for
 *         "none"), and what normalize() needs (see there). */
static int Scanner_init(Scanner *self, PyObject *args, PyObject *kwds) {
    (void)kwds;
    PyObject *keys, *flags, *nwords, *alt1, *alt2, *ids, *delete_id, *unk_id, *decode_table, *chars;
    Py_buffer bc;
    int maxlen, capcode, nfd;
    if (!PyArg_ParseTuple(args, "OOOOOOy*OOiOipO", &keys, &flags, &nwords, &alt1, &alt2, &ids, &bc, &delete_id,
                          &unk_id, &maxlen, &decode_table, &capcode, &nfd, &chars))
        return -1;
    if (self->term || self->trie) {
        PyBuffer_Release(&bc);
        PyErr_SetString(PyExc_RuntimeError, "Scanner is already initialised");
        return -1;
    }
    int rc = -1;
    PyObject *fast_keys = NULL, *fast_table = NULL;
    if (bc.len != 256) {
        PyErr_SetString(PyExc_ValueError, "Scanner: begin_class must be 256 bytes");
        goto done;
    }
    memcpy(self->bc, bc.buf, 256);
    fast_keys = PySequence_Fast(keys, "keys");
    if (!fast_keys)
        goto done;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(fast_keys);
    self->n_entries = (int)n;
    self->maxlen = maxlen;
    self->capcode = capcode;
    self->nfd = nfd;
    Py_INCREF(chars);
    self->chars = chars;
    if (read_int_list(flags, &self->flags, n, "flags") || read_int_list(nwords, &self->nwords, n, "nwords") ||
        read_int_list(alt1, &self->alt1, n, "alt1") || read_int_list(alt2, &self->alt2, n, "alt2") ||
        read_int_list(ids, &self->ids, n, "ids"))
        goto done;
    self->has_delete = delete_id != Py_None;
    self->delete_id = self->has_delete ? (int)PyLong_AsLong(delete_id) : 0;
    self->has_unk = unk_id != Py_None;
    self->unk_id = self->has_unk ? (int)PyLong_AsLong(unk_id) : 0;
    if (PyErr_Occurred())
        goto done;

    Py_ssize_t total = 1;
    self->key_len = PyMem_Calloc(n ? (size_t)n : 1, sizeof(int32_t));
    if (!self->key_len) {
        PyErr_NoMemory();
        goto done;
    }
    for (Py_ssize_t e = 0; e < n; e++) {
        PyObject *key = PySequence_Fast_GET_ITEM(fast_keys, e);
        if (!PyBytes_Check(key)) {
            PyErr_SetString(PyExc_TypeError, "Scanner: keys must be bytes");
            goto done;
        }
        self->key_len[e] = (int32_t)PyBytes_GET_SIZE(key);
        total += PyBytes_GET_SIZE(key);
    }
    self->term = PyMem_Malloc((size_t)total * sizeof(int32_t));
    uint64_t cap = 16;
    while (cap < (uint64_t)total * 2)
        cap <<= 1;
    self->hmask = cap - 1;
    self->hkeys = PyMem_Calloc(cap, sizeof(uint64_t));
    self->hvals = PyMem_Calloc(cap, sizeof(int32_t));
    if (!self->term || !self->hkeys || !self->hvals) {
        PyErr_NoMemory();
        goto done;
    }
    for (int b = 0; b < 256; b++)
        self->root_child[b] = -1;
    self->term[0] = -1;
    self->n_nodes = 1;
    for (Py_ssize_t e = 0; e < n; e++) {
        PyObject *key = PySequence_Fast_GET_ITEM(fast_keys, e);
        const uint8_t *kb = (const uint8_t *)PyBytes_AS_STRING(key);
        int32_t node = 0;
        for (Py_ssize_t d = 0; d < PyBytes_GET_SIZE(key); d++) {
            int32_t c = child_of(self, node, kb[d]);
            if (c < 0) {
                c = self->n_nodes++;
                self->term[c] = -1;
                if (node == 0)
                    self->root_child[kb[d]] = c;
                else
                    hash_put(self, node, kb[d], c);
            }
            node = c;
        }
        self->term[node] = (int32_t)e;
    }
    if (build_arrays(self, fast_keys) < 0)
        goto done;

    fast_table = PySequence_Fast(decode_table, "decode_table");
    if (!fast_table)
        goto done;
    self->n_ids = PySequence_Fast_GET_SIZE(fast_table);
    self->table = PyMem_Calloc(self->n_ids ? (size_t)self->n_ids : 1, sizeof(PyObject *));
    self->id_objects = PyMem_Calloc(self->n_ids ? (size_t)self->n_ids : 1, sizeof(PyObject *));
    if (!self->table || !self->id_objects) {
        PyErr_NoMemory();
        goto done;
    }
    for (Py_ssize_t k = 0; k < self->n_ids; k++)
        if (!(self->id_objects[k] = PyLong_FromSsize_t(k)))
            goto done;
    for (Py_ssize_t k = 0; k < self->n_ids; k++) {
        PyObject *item = PySequence_Fast_GET_ITEM(fast_table, k);
        if (!PyBytes_Check(item)) {
            PyErr_SetString(PyExc_TypeError, "Scanner: decode_table must hold bytes");
            goto done;
        }
        Py_INCREF(item);
        self->table[k] = item;
    }
    rc = 0;
done:
    Py_XDECREF(fast_keys);
    Py_XDECREF(fast_table);
    PyBuffer_Release(&bc);
    return rc;
}

/* The scan's form of the trie (see Scanner.trie) and the alternatives' suffix walks. */
static int build_arrays(Scanner *self, PyObject *fast_keys) {
    int nn = self->n_nodes, n = self->n_entries;
    int rc = -1;
    /* children of every node, grouped by parent: count, prefix sums, then fill */
    int32_t *count = PyMem_Calloc((size_t)nn, sizeof(int32_t));
    int32_t *first = PyMem_Calloc((size_t)nn + 1, sizeof(int32_t));
    int32_t *fill = PyMem_Calloc((size_t)nn, sizeof(int32_t));
    int32_t *cnode = PyMem_Malloc((size_t)nn * sizeof(int32_t));
    uint8_t *cbyte = PyMem_Malloc((size_t)nn);
    int32_t *offset = PyMem_Malloc((size_t)nn * sizeof(int32_t));
    int32_t *stack = PyMem_Malloc((size_t)nn * sizeof(int32_t));
    if (!count || !first || !fill || !cnode || !cbyte || !offset || !stack) {
        PyErr_NoMemory();
        goto done;
    }
    for (int b = 0; b < 256; b++)
        if (self->root_child[b] >= 0)
            count[0]++;
    for (uint64_t h = 0; h <= self->hmask; h++)
        if (self->hkeys[h])
            count[(self->hkeys[h] - 1) >> 8]++;
    for (int v = 0; v < nn; v++)
        first[v + 1] = first[v] + count[v];
    for (int b = 0; b < 256; b++)
        if (self->root_child[b] >= 0) {
            cbyte[fill[0]] = (uint8_t)b;
            cnode[fill[0]++] = self->root_child[b];
        }
    for (uint64_t h = 0; h <= self->hmask; h++)
        if (self->hkeys[h]) {
            int32_t parent = (int32_t)((self->hkeys[h] - 1) >> 8), at = first[parent] + fill[parent]++;
            cbyte[at] = (uint8_t)((self->hkeys[h] - 1) & 0xFF);
            cnode[at] = self->hvals[h];
        }
    /* offsets in depth-first order, children in byte order (pushed in reverse) */
    Py_ssize_t size = 0;
    int top = 0;
    stack[top++] = 0;
    while (top) {
        int32_t v = stack[--top];
        int32_t c = count[v];
        if (size > INT32_MAX - 260 - 2 * (Py_ssize_t)c) {
            PyErr_SetString(PyExc_ValueError, "Scanner: the vocabulary's trie is too large");
            goto done;
        }
        offset[v] = (int32_t)size;
        size += 2 + (c > LIST_MAX ? 256 : c ? 2 + c : 0);
        /* sort this node's children by byte (insertion sort: few children) */
        for (int32_t k = first[v] + 1; k < first[v] + c; k++) {
            uint8_t b = cbyte[k];
            int32_t child = cnode[k], m = k;
            for (; m > first[v] && cbyte[m - 1] > b; m--) {
                cbyte[m] = cbyte[m - 1];
                cnode[m] = cnode[m - 1];
            }
            cbyte[m] = b;
            cnode[m] = child;
        }
        for (int32_t k = first[v] + c - 1; k >= first[v]; k--)
            stack[top++] = cnode[k];
    }
    self->trie = PyMem_Calloc((size_t)size + 2, sizeof(int32_t)); /* + 2: a leaf's child_index reads past it */
    if (!self->trie) {
        PyErr_NoMemory();
        goto done;
    }
    for (int32_t v = 0; v < nn; v++) {
        int32_t *block = self->trie + offset[v], c = count[v];
        block[0] = self->term[v];
        if (c > LIST_MAX) {
            block[1] = -1;
            for (int b = 0; b < 256; b++)
                block[2 + b] = -1;
            for (int32_t k = 0; k < c; k++)
                block[2 + cbyte[first[v] + k]] = offset[cnode[first[v] + k]];
        } else {
            block[1] = c;
            for (int32_t k = 0; k < c; k++) {
                ((uint8_t *)(block + 2))[k] = cbyte[first[v] + k];
                block[4 + k] = offset[cnode[first[v] + k]];
            }
        }
    }
    self->space_node = self->root_child[0x20] >= 0 ? offset[self->root_child[0x20]] : -1;
    /* the building tables are not needed any more */
    PyMem_Free(self->term);
    PyMem_Free(self->hkeys);
    PyMem_Free(self->hvals);
    self->term = NULL;
    self->hkeys = NULL;
    self->hvals = NULL;
    rc = 0;
done:
    PyMem_Free(count);
    PyMem_Free(first);
    PyMem_Free(fill);
    PyMem_Free(cnode);
    PyMem_Free(cbyte);
    PyMem_Free(offset);
    PyMem_Free(stack);
    if (rc < 0)
        return rc;

    size_t slots = (size_t)(n ? n : 1) * 2;
    self->sw_node = PyMem_Malloc(slots * sizeof(int32_t));
    self->sw_best = PyMem_Malloc(slots * sizeof(int32_t));
    self->sw_best_len = PyMem_Malloc(slots * sizeof(int32_t));
    self->sw_consumed = PyMem_Malloc(slots * sizeof(int32_t));
    self->spaced_node = PyMem_Malloc((size_t)(n ? n : 1) * sizeof(int32_t));
    if (!self->sw_node || !self->sw_best || !self->sw_best_len || !self->sw_consumed || !self->spaced_node) {
        PyErr_NoMemory();
        return -1;
    }
    for (int e = 0; e < n; e++) {
        PyObject *key = PySequence_Fast_GET_ITEM(fast_keys, e);
        const uint8_t *kb = (const uint8_t *)PyBytes_AS_STRING(key);
        int32_t spaced = self->space_node;
        for (Py_ssize_t d = 0; spaced >= 0 && d < PyBytes_GET_SIZE(key); d++)
            spaced = step(self, spaced, kb[d]);
        self->spaced_node[e] = spaced;
        for (int slot = 0; slot < 2; slot++) {
            size_t w = (size_t)e * 2 + slot;
            int32_t a = slot == 0 ? self->alt1[e] : self->alt2[e];
            self->sw_node[w] = -2;
            if (a < 0 || a >= n)
                continue;
            PyObject *akey = PySequence_Fast_GET_ITEM(fast_keys, a);
            Py_ssize_t alen = PyBytes_GET_SIZE(akey);
            if (alen > PyBytes_GET_SIZE(key) || memcmp(PyBytes_AS_STRING(akey), kb, (size_t)alen) != 0)
                continue;
            int32_t node = 0, best = -1;
            int best_len = 0, consumed = 0;
            for (Py_ssize_t d = alen; d < PyBytes_GET_SIZE(key); d++) {
                node = step(self, node, kb[d]);
                consumed++;
                if (node < 0)
                    break;
                if (TERM(self, node) >= 0) {
                    best = TERM(self, node);
                    best_len = consumed;
                }
            }
            self->sw_node[w] = node < 0 ? -1 : node;
            self->sw_best[w] = best;
            self->sw_best_len[w] = best_len;
            self->sw_consumed[w] = consumed;
        }
    }
    return 0;
}

static int check_ready(Scanner *self) {
    if (!self->trie || !self->table) {
        PyErr_SetString(PyExc_RuntimeError, "Scanner was not initialised");
        return -1;
    }
    return 0;
}

/* the scan of data[0:n] as a list of ints (NULL with an exception set on failure) */
static PyObject *scan_to_list(Scanner *self, const uint8_t *data, Py_ssize_t n, Py_ssize_t *missing) {
    IdBuf out = {NULL, 0, 0, 0};
    *missing = 0;
    if (n > 0 && self->maxlen > 0) {
        if (n > 256) {
            Py_BEGIN_ALLOW_THREADS
            *missing = scan(self, data, n, &out);
            Py_END_ALLOW_THREADS
        } else {
            *missing = scan(self, data, n, &out); /* short texts: the GIL round trip costs more */
        }
    }
    if (out.failed) {
        free(out.ids);
        return PyErr_NoMemory();
    }
    PyObject *list = PyList_New(out.n);
    for (Py_ssize_t k = 0; list && k < out.n; k++) {
        int32_t id = out.ids[k];
        PyObject *v = id >= 0 && id < self->n_ids ? self->id_objects[id] : NULL;
        if (v) {
            Py_INCREF(v);
        } else if (!(v = PyLong_FromLong(id))) {
            Py_CLEAR(list);
            break;
        }
        PyList_SET_ITEM(list, k, v);
    }
    free(out.ids);
    return list;
}

/* encode(data: bytes) -> (list of ids, missing) for already normalized bytes */
static PyObject *Scanner_encode(Scanner *self, PyObject *arg) {
    if (check_ready(self))
        return NULL;
    if (!PyBytes_Check(arg)) {
        PyErr_Format(PyExc_TypeError, "encode() takes normalized bytes, not %s", Py_TYPE(arg)->tp_name);
        return NULL;
    }
    Py_ssize_t missing;
    PyObject *list = scan_to_list(self, (const uint8_t *)PyBytes_AS_STRING(arg), PyBytes_GET_SIZE(arg), &missing);
    return list ? Py_BuildValue("(Nn)", list, missing) : NULL;
}

static PyObject *normalize_text(Scanner *self, PyObject *text);

/* encode_text(text: str) -> list of ids, or None where normalize() gives None: normalization and
 * scan in one call, Vocab.encode's path for text */
static PyObject *Scanner_encode_text(Scanner *self, PyObject *text) {
    if (check_ready(self))
        return NULL;
    PyObject *data = normalize_text(self, text);
    if (!data || data == Py_None)
        return data;
    Py_ssize_t missing;
    PyObject *list = scan_to_list(self, (const uint8_t *)PyBytes_AS_STRING(data), PyBytes_GET_SIZE(data), &missing);
    Py_DECREF(data);
    return list;
}

/* normalize(text: str) -> bytes or None: see normalize_text */
static PyObject *Scanner_normalize(Scanner *self, PyObject *text) {
    if (check_ready(self))
        return NULL;
    return normalize_text(self, text);
}

/* The stored bytes of ids, concatenated; ids outside 0..n_ids-1 are skipped (as the reference). */
static PyObject *join_ids(Scanner *self, PyObject *ids_obj) {
    PyObject *fast = PySequence_Fast(ids_obj, "decode() takes a sequence of token ids");
    if (!fast)
        return NULL;
    Py_ssize_t count = PySequence_Fast_GET_SIZE(fast), total = 0;
    PyObject **items = PySequence_Fast_ITEMS(fast);
    Py_ssize_t *which = PyMem_Malloc((count ? (size_t)count : 1) * sizeof(Py_ssize_t));
    if (!which) {
        Py_DECREF(fast);
        return PyErr_NoMemory();
    }
    for (Py_ssize_t k = 0; k < count; k++) {
        int overflow = 0;
        long long v;
        if (PyLong_Check(items[k])) {
            v = PyLong_AsLongLongAndOverflow(items[k], &overflow);
        } else {
            PyObject *index = PyNumber_Index(items[k]);
            if (!index) {
                PyMem_Free(which);
                Py_DECREF(fast);
                return NULL;
            }
            v = PyLong_AsLongLongAndOverflow(index, &overflow);
            Py_DECREF(index);
        }
        if (v == -1 && PyErr_Occurred()) {
            PyMem_Free(which);
            Py_DECREF(fast);
            return NULL;
        }
        if (overflow || v < 0 || v >= self->n_ids) {
            which[k] = -1;
        } else {
            which[k] = (Py_ssize_t)v;
            total += PyBytes_GET_SIZE(self->table[v]);
        }
    }
    PyObject *result = PyBytes_FromStringAndSize(NULL, total);
    if (result) {
        char *dst = PyBytes_AS_STRING(result);
        for (Py_ssize_t k = 0; k < count; k++) {
            if (which[k] < 0)
                continue;
            PyObject *b = self->table[which[k]];
            memcpy(dst, PyBytes_AS_STRING(b), (size_t)PyBytes_GET_SIZE(b));
            dst += PyBytes_GET_SIZE(b);
        }
    }
    PyMem_Free(which);
    Py_DECREF(fast);
    return result;
}

/* Drop each 0x7F and the byte after it; `*pending` carries a marker whose byte is yet to come. */
static PyObject *strip_markers(const uint8_t *src, Py_ssize_t n, int *pending) {
    PyObject *result = PyBytes_FromStringAndSize(NULL, n);
    if (!result)
        return NULL;
    uint8_t *dst = (uint8_t *)PyBytes_AS_STRING(result);
    Py_ssize_t w = 0;
    int p = *pending;
    for (Py_ssize_t k = 0; k < n; k++) {
        uint8_t x = src[k];
        if (x == 0x7F)
            p = 1;
        else if (p)
            p = 0;
        else
            dst[w++] = x;
    }
    *pending = p;
    if (w != n && _PyBytes_Resize(&result, w) < 0)
        return NULL;
    return result;
}

/* decode(ids) -> bytes: Vocab.decode */
static PyObject *Scanner_decode(Scanner *self, PyObject *ids) {
    if (check_ready(self))
        return NULL;
    PyObject *raw = join_ids(self, ids);
    if (!raw || self->capcode != 1 || !memchr(PyBytes_AS_STRING(raw), 0x7F, (size_t)PyBytes_GET_SIZE(raw)))
        return raw;
    /* the pure engine's regex \x7f[\x00-\xff]?: a marker and whatever byte follows it (a second
     * marker included) go; a marker at the very end just disappears */
    const uint8_t *src = (const uint8_t *)PyBytes_AS_STRING(raw);
    Py_ssize_t n = PyBytes_GET_SIZE(raw), w = 0;
    PyObject *out = PyBytes_FromStringAndSize(NULL, n);
    if (out) {
        uint8_t *dst = (uint8_t *)PyBytes_AS_STRING(out);
        for (Py_ssize_t k = 0; k < n; k++) {
            if (src[k] == 0x7F)
                k++;
            else
                dst[w++] = src[k];
        }
    }
    Py_DECREF(raw);
    if (out && _PyBytes_Resize(&out, w) < 0)
        return NULL;
    return out;
}

/* join(ids) -> bytes: the stored bytes of the ids, delete markers left in (the stream decoder) */
static PyObject *Scanner_join(Scanner *self, PyObject *ids) {
    if (check_ready(self))
        return NULL;
    return join_ids(self, ids);
}

/* strip(data, pending) -> (bytes, pending): the stream decoder's delete-marker pass */
static PyObject *Scanner_strip(Scanner *self, PyObject *args) {
    (void)self;
    Py_buffer data;
    int pending;
    if (!PyArg_ParseTuple(args, "y*p", &data, &pending))
        return NULL;
    PyObject *out = strip_markers((const uint8_t *)data.buf, data.len, &pending);
    PyBuffer_Release(&data);
    if (!out)
        return NULL;
    return Py_BuildValue("(NO)", out, pending ? Py_True : Py_False);
}

/* The normalized bytes of text, or None where this pass does not apply: a lone surrogate, or a
 * run of more than 30 non-starters (where the stream-safe rule puts in a CGJ). Otherwise exactly
 * Vocab._normalize_str(text).encode(): NFD by Unicode 13 when `nfd`
 * (each code point's full decomposition, then every run of non-starters put in canonical order,
 * a stable sort by combining class), then with capcode 1 capcode level 1 (SPEC §4.2): DEL
 * becomes 0x14, and "\x7f " goes before a letter unless the previous code point is a space,
 * letter or mark, or an apostrophe after a letter, and before a number unless the previous one
 * is a space or number; then UTF-8. `chars` maps a non-ASCII code point to (class, combining
 * class, NFD) by Unicode 13, class being "a", "0", "m", " ", "'" or ".": the pure engine's
 * tables, so the Unicode data has one home. It is asked only about non-ASCII code points. */

/* capcode classes (SPEC §4.2), as codes; "none" (the start of the text) acts as OTHER */
enum { OTHER, LETTER, NUMBER, MARK, SPACE, APOSTROPHE, N_CLASSES };
static uint8_t ascii_class[128];
/* marker[(before previous * N_CLASSES + previous) * N_CLASSES + class]: 1 where a "\x7f "
 * goes before a code point of that class */
static uint8_t marker[N_CLASSES * N_CLASSES * N_CLASSES];

static void init_classes(void) {
    for (int c = 0; c < 128; c++)
        ascii_class[c] = c == ' ' ? SPACE : c == '\'' ? APOSTROPHE
                       : ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')) ? LETTER
                       : (c >= '0' && c <= '9') ? NUMBER : OTHER;
    for (int p2 = 0; p2 < N_CLASSES; p2++)
        for (int p1 = 0; p1 < N_CLASSES; p1++) {
            uint8_t *row = marker + (p2 * N_CLASSES + p1) * N_CLASSES;
            row[LETTER] = !(p1 == SPACE || p1 == LETTER || p1 == MARK || (p1 == APOSTROPHE && p2 == LETTER));
            row[NUMBER] = !(p1 == SPACE || p1 == NUMBER);
        }
}

#define MAX_NONSTARTERS 30

typedef struct {
    Py_UCS4 cp;
    int ccc;
    uint8_t cls;
} Unit;

typedef struct {
    PyObject *out; /* bytes being written, grown as needed */
    uint8_t *dst;
    Py_ssize_t w, cap;
    const uint8_t *marker; /* the table above, or all zeros for capcode 0 */
    uint8_t del;           /* what DEL becomes: 0x14 with capcode 1 */
    int prev2, prev1;      /* classes of the two code points before */
    Unit run[MAX_NONSTARTERS];
    int n_run;
} Normalizer;

static const uint8_t no_markers[N_CLASSES * N_CLASSES * N_CLASSES];

/* room for `extra` more bytes */
static int reserve(Normalizer *z, Py_ssize_t extra) {
    if (z->w + extra <= z->cap)
        return 0;
    if (z->cap > PY_SSIZE_T_MAX / 2 - extra) {
        PyErr_NoMemory();
        return -1;
    }
    if (_PyBytes_Resize(&z->out, z->cap * 2 + extra) < 0)
        return -1;
    z->dst = (uint8_t *)PyBytes_AS_STRING(z->out);
    z->cap = PyBytes_GET_SIZE(z->out);
    return 0;
}

/* one code point of the NFD text: its capcode marker, then its UTF-8 (room for 6 bytes reserved) */
static inline void emit(Normalizer *z, Py_UCS4 c, int cls) {
    uint8_t *dst = z->dst;
    Py_ssize_t w = z->w;
    if (z->marker[(z->prev2 * N_CLASSES + z->prev1) * N_CLASSES + cls]) {
        dst[w++] = 0x7F;
        dst[w++] = 0x20;
    }
    z->prev2 = z->prev1;
    z->prev1 = cls;
    if (c < 0x80) {
        dst[w++] = c == 0x7F ? z->del : (uint8_t)c;
    } else if (c < 0x800) {
        dst[w++] = (uint8_t)(0xC0 | (c >> 6));
        dst[w++] = (uint8_t)(0x80 | (c & 0x3F));
    } else if (c < 0x10000) {
        dst[w++] = (uint8_t)(0xE0 | (c >> 12));
        dst[w++] = (uint8_t)(0x80 | ((c >> 6) & 0x3F));
        dst[w++] = (uint8_t)(0x80 | (c & 0x3F));
    } else {
        dst[w++] = (uint8_t)(0xF0 | (c >> 18));
        dst[w++] = (uint8_t)(0x80 | ((c >> 12) & 0x3F));
        dst[w++] = (uint8_t)(0x80 | ((c >> 6) & 0x3F));
        dst[w++] = (uint8_t)(0x80 | (c & 0x3F));
    }
    z->w = w;
}

/* the pending non-starters in canonical order (insertion sort: stable, and a run is short) */
static int flush_run(Normalizer *z) {
    for (int k = 1; k < z->n_run; k++) {
        Unit u = z->run[k];
        int m = k;
        for (; m > 0 && z->run[m - 1].ccc > u.ccc; m--)
            z->run[m] = z->run[m - 1];
        z->run[m] = u;
    }
    if (reserve(z, 6 * (Py_ssize_t)z->n_run) < 0)
        return -1;
    for (int k = 0; k < z->n_run; k++)
        emit(z, z->run[k].cp, z->run[k].cls);
    z->n_run = 0;
    return 0;
}

/* a code point of the decomposed text: 1 done, 0 the run is too long for this pass, -1 error */
static inline int add(Normalizer *z, Py_UCS4 c, int ccc, int cls) {
    if (ccc == 0) {
        if ((z->n_run && flush_run(z) < 0) || reserve(z, 6) < 0)
            return -1;
        emit(z, c, cls);
        return 1;
    }
    if (z->n_run == MAX_NONSTARTERS)
        return 0;
    z->run[z->n_run++] = (Unit){c, ccc, (uint8_t)cls};
    return 1;
}

/* chars[c] as (class, combining class, NFD): a new reference to the NFD string, or NULL */
static PyObject *char_info(PyObject *chars, Py_UCS4 c, int *cls, int *ccc) {
    PyObject *key = PyLong_FromUnsignedLong(c);
    PyObject *v = key ? PyObject_GetItem(chars, key) : NULL;
    Py_XDECREF(key);
    if (!v)
        return NULL;
    PyObject *nfd = NULL;
    if (PyTuple_Check(v) && PyTuple_GET_SIZE(v) == 3 && PyUnicode_Check(PyTuple_GET_ITEM(v, 0))
        && PyUnicode_GET_LENGTH(PyTuple_GET_ITEM(v, 0)) == 1 && PyLong_Check(PyTuple_GET_ITEM(v, 1))
        && PyUnicode_Check(PyTuple_GET_ITEM(v, 2)) && PyUnicode_GET_LENGTH(PyTuple_GET_ITEM(v, 2)) > 0) {
        Py_UCS4 name = PyUnicode_READ_CHAR(PyTuple_GET_ITEM(v, 0), 0);
        *cls = name == 'a' ? LETTER : name == '0' ? NUMBER : name == 'm' ? MARK
             : name == ' ' ? SPACE : name == '\'' ? APOSTROPHE : OTHER;
        *ccc = (int)PyLong_AsLong(PyTuple_GET_ITEM(v, 1));
        nfd = PyTuple_GET_ITEM(v, 2);
        Py_INCREF(nfd);
    } else {
        PyErr_SetString(PyExc_TypeError, "Scanner: chars must map code points to (class, combining class, NFD) tuples");
    }
    Py_DECREF(v);
    return nfd;
}

/* one non-ASCII code point, decomposed (or not) and added unit by unit */
static int add_decomposed(Normalizer *z, PyObject *chars, Py_UCS4 c, int nfd) {
    int cls, ccc;
    PyObject *decomposition = char_info(chars, c, &cls, &ccc);
    if (!decomposition)
        return -1;
    int rc = 1;
    Py_ssize_t len = PyUnicode_GET_LENGTH(decomposition);
    if (!nfd || (len == 1 && PyUnicode_READ_CHAR(decomposition, 0) == c)) {
        rc = add(z, c, nfd ? ccc : 0, cls);
    } else {
        for (Py_ssize_t k = 0; k < len && rc == 1; k++) {
            Py_UCS4 d = PyUnicode_READ_CHAR(decomposition, k);
            if (d < 0x80) {
                rc = add(z, d, 0, ascii_class[d]);
            } else {
                PyObject *own = char_info(chars, d, &cls, &ccc); /* a decomposition decomposes to itself */
                if (!own) {
                    rc = -1;
                    break;
                }
                Py_DECREF(own);
                rc = add(z, d, ccc, cls);
            }
        }
    }
    Py_DECREF(decomposition);
    return rc;
}

/* ASCII from text[k] on, while no non-starter is pending: the common case, in a tight loop.
 * Returns where it stopped (the first non-ASCII code point, or n), -1 on error. */
#define ASCII_BLOCK 256
static Py_ssize_t add_ascii(Normalizer *z, int kind, const void *data, Py_ssize_t k, Py_ssize_t n) {
    while (k < n) {
        Py_ssize_t stop = n - k < ASCII_BLOCK ? n : k + ASCII_BLOCK;
        if (reserve(z, 3 * ASCII_BLOCK) < 0)
            return -1;
        uint8_t *dst = z->dst;
        Py_ssize_t w = z->w;
        int prev2 = z->prev2, prev1 = z->prev1;
        for (; k < stop; k++) {
            Py_UCS4 c = PyUnicode_READ(kind, data, k);
            if (c >= 0x80)
                break;
            int cls = ascii_class[c];
            /* the marker's two bytes are written always and kept only when due */
            dst[w] = 0x7F;
            dst[w + 1] = 0x20;
            w += 2 * z->marker[(prev2 * N_CLASSES + prev1) * N_CLASSES + cls];
            prev2 = prev1;
            prev1 = cls;
            dst[w++] = c == 0x7F ? z->del : (uint8_t)c;
        }
        z->w = w;
        z->prev2 = prev2;
        z->prev1 = prev1;
        if (k < stop)
            break;
    }
    return k;
}

static PyObject *normalize_text(Scanner *self, PyObject *text) {
    if (!PyUnicode_Check(text)) {
        PyErr_Format(PyExc_TypeError, "normalize() takes str, not %s", Py_TYPE(text)->tp_name);
        return NULL;
    }
#if PY_VERSION_HEX < 0x030C0000
    if (PyUnicode_READY(text) < 0) /* a string made by the old Py_UNICODE APIs (before 3.12) */
        return NULL;
#endif
    Py_ssize_t n = PyUnicode_GET_LENGTH(text);
    int kind = PyUnicode_KIND(text);
    const void *data = PyUnicode_DATA(text);
    if (n > (PY_SSIZE_T_MAX - 16) / 4)
        return PyErr_NoMemory();
    Normalizer z = {.out = PyBytes_FromStringAndSize(NULL, n + n / 4 + 16),
                    .marker = self->capcode == 1 ? marker : no_markers,
                    .del = self->capcode == 1 ? 0x14 : 0x7F};
    if (!z.out)
        return NULL;
    z.dst = (uint8_t *)PyBytes_AS_STRING(z.out);
    z.cap = PyBytes_GET_SIZE(z.out);
    int rc = 1;
    Py_ssize_t k = 0;
    while (k < n && rc == 1) {
        if (!z.n_run) {
            k = add_ascii(&z, kind, data, k, n);
            if (k < 0) {
                rc = -1;
                break;
            }
            if (k == n)
                break;
        }
        Py_UCS4 c = PyUnicode_READ(kind, data, k++);
        if (c < 0x80)
            rc = add(&z, c, 0, ascii_class[c]);
        else if (c >= 0xD800 && c <= 0xDFFF)
            rc = 0;
        else
            rc = add_decomposed(&z, self->chars, c, self->nfd);
    }
    if (rc == 1 && z.n_run && flush_run(&z) < 0)
        rc = -1;
    if (rc != 1) {
        Py_XDECREF(z.out);
        if (rc < 0)
            return NULL;
        Py_RETURN_NONE;
    }
    if (_PyBytes_Resize(&z.out, z.w) < 0)
        return NULL;
    return z.out;
}

/* collapse_whitespace(text) == " ".join(text.split()): every run of whitespace (str.isspace, as
 * str.split() sees it) one space, none at the ends. The card's cleaning after NFKC
 * (stentor_hub/recipes/data.py clean_text); the split builds an object per word, this one
 * string: in data preparation that was a third of a worker's time. */
static uint8_t latin1_space[256]; /* str.isspace of U+0000..U+00FF, filled at import */

#define COLLAPSE_LOOP(TYPE)                                                                         \
    do {                                                                                            \
        const TYPE *src = (const TYPE *)data;                                                       \
        TYPE *dst = (TYPE *)buf;                                                                    \
        for (Py_ssize_t i = 0; i < n; i++) {                                                        \
            Py_UCS4 c = src[i];                                                                     \
            if (c < 256 ? latin1_space[c] : Py_UNICODE_ISSPACE(c)) {                                \
                owed = w > 0;                                                                       \
            } else {                                                                                \
                if (owed)                                                                           \
                    dst[w++] = ' ';                                                                 \
                owed = 0;                                                                           \
                dst[w++] = (TYPE)c;                                                                 \
            }                                                                                       \
        }                                                                                           \
    } while (0)

static PyObject *collapse_whitespace(PyObject *module, PyObject *text) {
    (void)module;
    if (!PyUnicode_Check(text)) {
        PyErr_Format(PyExc_TypeError, "collapse_whitespace() takes str, not %s", Py_TYPE(text)->tp_name);
        return NULL;
    }
#if PY_VERSION_HEX < 0x030C0000
    if (PyUnicode_READY(text) < 0)
        return NULL;
#endif
    Py_ssize_t n = PyUnicode_GET_LENGTH(text);
    int kind = PyUnicode_KIND(text);
    const void *data = PyUnicode_DATA(text);
    void *buf = PyMem_RawMalloc(n ? (size_t)n * kind : 1);
    if (!buf)
        return PyErr_NoMemory();
    Py_ssize_t w = 0;
    int owed = 0; /* a space goes before the next character that is not one */
    Py_BEGIN_ALLOW_THREADS /* the input is immutable and held by the caller; the tables are constant */
    if (kind == PyUnicode_1BYTE_KIND)
        COLLAPSE_LOOP(Py_UCS1);
    else if (kind == PyUnicode_2BYTE_KIND)
        COLLAPSE_LOOP(Py_UCS2);
    else
        COLLAPSE_LOOP(Py_UCS4);
    Py_END_ALLOW_THREADS
    /* narrows to the smallest kind that holds the result (whitespace gone, the widest character
     * may be too), as every str must be */
    PyObject *out = PyUnicode_FromKindAndData(kind, buf, w);
    PyMem_RawFree(buf);
    return out;
}

static PyMethodDef module_methods[] = {
    {"collapse_whitespace", (PyCFunction)collapse_whitespace, METH_O,
     "collapse_whitespace(text: str) -> str: \" \".join(text.split()), in one pass"},
    {NULL, NULL, 0, NULL},
};

static PyMethodDef Scanner_methods[] = {
    {"encode", (PyCFunction)Scanner_encode, METH_O, "encode(normalized: bytes) -> (ids, missing)"},
    {"encode_text", (PyCFunction)Scanner_encode_text, METH_O, "encode_text(text: str) -> ids, or None (normalize)"},
    {"normalize", (PyCFunction)Scanner_normalize, METH_O, "normalize(text: str) -> bytes, or None: the pure path must run"},
    {"decode", (PyCFunction)Scanner_decode, METH_O, "decode(ids) -> bytes, delete markers applied"},
    {"join", (PyCFunction)Scanner_join, METH_O, "join(ids) -> the ids' stored bytes, concatenated"},
    {"strip", (PyCFunction)Scanner_strip, METH_VARARGS, "strip(data, pending) -> (bytes, pending)"},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject ScannerType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "stentor_hub._native._tokenmonster.Scanner",
    .tp_basicsize = sizeof(Scanner),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "The compiled TokenMonster scanner over a parsed vocabulary's tables.",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Scanner_init,
    .tp_dealloc = (destructor)Scanner_dealloc,
    .tp_methods = Scanner_methods,
};

static struct PyModuleDef moduledef = {
    PyModuleDef_HEAD_INIT, "_tokenmonster", "The compiled TokenMonster scanner (see remote_code/tokenmonster.py).", -1,
    module_methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__tokenmonster(void) {
    init_classes();
    for (int c = 0; c < 256; c++)
        latin1_space[c] = Py_UNICODE_ISSPACE(c) != 0;
    if (PyType_Ready(&ScannerType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&moduledef);
    if (!m)
        return NULL;
    Py_INCREF(&ScannerType);
    if (PyModule_AddObject(m, "Scanner", (PyObject *)&ScannerType) < 0 || PyModule_AddIntConstant(m, "ABI", ABI_VERSION) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
