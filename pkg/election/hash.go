package election

import "hash/fnv"

// Preferred returns the candidate with the highest rendezvous score for
// serviceKey ("" when there are no candidates). The score is a 64-bit
// FNV-1a hash of serviceKey, a NUL byte and the node name, finalised with
// the murmur3 mixer so that similar names spread well; it is the same in
// every process. Ties (practically impossible) go to the smaller name.
// Removing a candidate moves only the keys it was preferred for.
func Preferred(serviceKey string, candidates []string) string {
	var best string
	var bestScore uint64
	for _, c := range candidates {
		if c == "" {
			continue
		}
		s := score(serviceKey, c)
		if best == "" || s > bestScore || (s == bestScore && c < best) {
			best, bestScore = c, s
		}
	}
	return best
}

// score is the rendezvous weight of node for serviceKey.
func score(serviceKey, node string) uint64 {
	f := fnv.New64a()
	f.Write([]byte(serviceKey)) // a hash.Hash never returns an error
	f.Write([]byte{0})
	f.Write([]byte(node))
	h := f.Sum64()
	// murmur3 fmix64.
	h ^= h >> 33
	h *= 0xff51afd7ed558ccd
	h ^= h >> 33
	h *= 0xc4ceb53fe85a9ec3
	h ^= h >> 33
	return h
}
