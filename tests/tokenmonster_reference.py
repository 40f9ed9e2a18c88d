"""A deliberately naive port of SPEC §5 (longest match by dictionary probing, no memo, no
trie), used only to cross-check the engine's optimised scanner on arbitrary inputs."""

from __future__ import annotations

NEG = -1000000


def tokenize_reference(vocab, data: bytes) -> tuple[list[int], int]:
    keys = vocab._keys
    flags = vocab._flags
    nwords = vocab._nwords
    alt1 = vocab._alt1
    alt2 = vocab._alt2
    ids = vocab._ids
    index_of = vocab._index_of
    bc = vocab._begin_class
    maxlen = vocab.max_token_len
    delete_id = vocab.delete_id
    n = len(data)

    def longest(p):
        for length in range(min(n - p, maxlen), 0, -1):
            e = index_of.get(data[p : p + length])
            if e is not None:
                return e, length
        return None, 0

    def longest_spaced(p):
        window = b" " + data[p : p + min(n - p, maxlen - 1)]
        for length in range(len(window), 0, -1):
            e = index_of.get(window[:length])
            if e is not None:
                return e, length
        return 0, 0

    def cls(q):
        return bc[data[q]] if q < n else bc[0]

    def base(t, f1, w1, f2, w2, nb):
        return (
            t + (f1 >> 7) + (f2 >> 7) + max(0, w1 - 1) + max(0, w2 - 1) + ((nb >> 2) & 1)
            + 100 * (w1 + w2 + (nb >> 3))
            - 100 * (((f1 >> 3) & 1) & ((f2 >> 4) & 1))
            - 3 * ((f2 & 1) & (nb & 1))
        )

    def plain(t, f1, w1, f2, w2, nb):
        return base(t, f1, w1, f2, w2, nb) + ((f2 >> 2) & 1) - 103 * ((f1 & 1) & ((f2 >> 1) & 1))

    def spaced(t, f1, w1, f2, w2, nb):
        return base(t, f1, w1, f2, w2, nb) - 103 * (f1 & 1) - 1

    def penalty(t, length):
        return 100 if t < length else 10000 if t == length else 0

    out = []
    missing = 0
    i = 0
    fd = 0
    while i < n:
        cur, L = longest(i)
        if cur is None:
            if vocab.unk_id is not None:
                out.append(vocab.unk_id)
            missing += 1
            i += 1
            fd = 0
            continue
        while True:
            j = i + L
            if j >= n or (flags[cur] & 32 and cls(j) == 12):
                break
            scores = [NEG] * 6
            moves = [None] * 6
            n1, l1 = longest(j)
            if n1 is not None:
                nb = cls(j + l1)
                scores[0] = plain(L + l1, flags[cur], nwords[cur] - fd, flags[n1], nwords[n1], nb)
                moves[0] = ([ids[cur]], L, n1, l1, 0)
                if delete_id is not None and flags[n1] & 2 and nb == 1 and nwords[n1] == 0:
                    m, k = longest_spaced(j)
                    if k > l1 + 1:
                        k -= 1
                        scores[3] = spaced(L + k, flags[cur], nwords[cur] - fd, flags[m], nwords[m], cls(j + k))
                        moves[3] = ([ids[cur], delete_id], L, m, k, 1)
            if alt1[cur] >= 0:
                for slot, a in ((1, alt1[cur]), (2, alt2[cur])):
                    if a < 0:
                        break
                    la = len(keys[a]) - fd
                    q = i + la
                    n2, l2 = longest(q)
                    if n2 is None:
                        continue
                    t = la + l2
                    nb = cls(q + l2)
                    scores[slot] = plain(t, flags[a], nwords[a] - fd, flags[n2], nwords[n2], nb) - penalty(t, L)
                    moves[slot] = ([ids[a]], la, n2, l2, 0)
                    if delete_id is not None and flags[n2] & 2 and nb == 1 and nwords[n2] == 0:
                        m, k = longest_spaced(q)
                        if k > l2 + 1:
                            k -= 1
                            t = la + k
                            scores[slot + 3] = spaced(t, flags[a], nwords[a] - fd, flags[m], nwords[m], cls(q + k)) - penalty(t, L)
                            moves[slot + 3] = ([ids[a], delete_id], la, m, k, 1)
            best = max(scores)
            if best == NEG:
                break
            order = [0, 1, 2, 3, 4, 5]  # s1, s2, s3, s1b, s2b, s3b
            chosen = next(o for o in order if scores[o] == best)
            emitted, advance, cur, L, fd = moves[chosen]
            out.extend(emitted)
            i += advance
        out.append(ids[cur])
        i += L
        fd = 0
    return out, missing
