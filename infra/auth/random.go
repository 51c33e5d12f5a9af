package auth

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
)

// tokenBytes is the entropy of session ids and CSRF tokens: 256 bits, far beyond guessing range.
const tokenBytes = 32

// tokenEncoding is strict so that one id has exactly one spelling: a lenient decoder would accept
// several cookie values (differing in unused trailing bits) for the same session.
func tokenEncoding() *base64.Encoding { return base64.RawURLEncoding.Strict() }

// randomToken returns tokenBytes random bytes, base64url-encoded without padding (43 characters).
func randomToken() string {
	b := make([]byte, tokenBytes)
	// crypto/rand.Read never fails since Go 1.24: it crashes the program rather than return
	// predictable bytes.
	_, _ = rand.Read(b)
	enc := tokenEncoding()
	return enc.EncodeToString(b)
}

// tokenHash returns the SHA-256 of a well-formed token's bytes, or false for anything that cannot be a
// token we issued, so that junk cookies never cost a database round trip.
func tokenHash(token string) ([]byte, bool) {
	enc := tokenEncoding()
	if len(token) != enc.EncodedLen(tokenBytes) {
		return nil, false
	}
	b, err := enc.DecodeString(token)
	if err != nil || len(b) != tokenBytes {
		return nil, false
	}
	sum := sha256.Sum256(b)
	return sum[:], true
}
