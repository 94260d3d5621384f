package labs

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"strings"
)

// Static answers can be stored hashed so that reading a lab file does not
// give the answer away. The format is sha256:<salt hex>:<digest hex>,
// where digest = SHA-256(salt || normalised answer) and the salt is 16
// random bytes.

// normaliseAnswer trims surrounding white space and, unless the
// comparison is case-sensitive, lower-cases the answer.
func normaliseAnswer(answer string, caseSensitive bool) string {
	a := strings.TrimSpace(answer)
	if !caseSensitive {
		a = strings.ToLower(a)
	}
	return a
}

// HashAnswer returns the salted hash of an answer for a `hash:` matcher.
// The answer is normalised first: surrounding white space is trimmed and
// it is lower-cased, so hashed answers always compare case-insensitively.
func HashAnswer(answer string) string {
	salt := make([]byte, 16)
	// crypto/rand.Read never returns an error (it crashes the program
	// instead if the kernel cannot provide randomness).
	_, _ = rand.Read(salt)
	return formatHash(salt, normaliseAnswer(answer, false))
}

func formatHash(salt []byte, normalised string) string {
	sum := sha256.Sum256(append(append([]byte{}, salt...), normalised...))
	return "sha256:" + hex.EncodeToString(salt) + ":" + hex.EncodeToString(sum[:])
}

// MatchHash reports whether answer matches a hash made by HashAnswer. The
// digest comparison is constant-time. With caseSensitive the answer is
// not lower-cased, so only an answer already in lower case can match
// (the loader rejects case_sensitive together with hash).
func MatchHash(hash, answer string, caseSensitive bool) bool {
	if !hashRe.MatchString(hash) {
		return false
	}
	parts := strings.Split(hash, ":")
	salt, err1 := hex.DecodeString(parts[1])
	want, err2 := hex.DecodeString(parts[2])
	if err1 != nil || err2 != nil {
		return false
	}
	got := sha256.Sum256(append(salt, normaliseAnswer(answer, caseSensitive)...))
	return subtle.ConstantTimeCompare(got[:], want) == 1
}
