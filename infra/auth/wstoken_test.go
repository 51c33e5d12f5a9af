package auth

import (
	"bytes"
	"encoding/base64"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/google/uuid"
)

func testSecret() []byte { return bytes.Repeat([]byte("k"), MinSecretLen) }

func newTestWSTokens(t *testing.T, clock *testClock) *WSTokens {
	t.Helper()
	w, err := NewWSTokens(testSecret(), clock.Now, 0)
	if err != nil {
		t.Fatalf("NewWSTokens: %v", err)
	}
	return w
}

// sign makes a token the way an attacker (or a buggy peer) might, with the test secret.
func sign(t *testing.T, method jwt.SigningMethod, key any, claims jwt.Claims) string {
	t.Helper()
	s, err := jwt.NewWithClaims(method, claims).SignedString(key)
	if err != nil {
		t.Fatalf("sign: %v", err)
	}
	return s
}

func validClaims(clock *testClock, sub uuid.UUID) jwt.RegisteredClaims {
	now := clock.Now()
	return jwt.RegisteredClaims{
		Issuer:    WSTokenIssuer,
		Subject:   sub.String(),
		Audience:  jwt.ClaimStrings{WSTokenAudience},
		IssuedAt:  jwt.NewNumericDate(now),
		ExpiresAt: jwt.NewNumericDate(now.Add(time.Minute)),
		ID:        "jti",
	}
}

func TestWSTokenRoundTripAndClaims(t *testing.T) {
	clock := newTestClock()
	w := newTestWSTokens(t, clock)
	user := uuid.New()
	token, exp, err := w.Issue(user)
	if err != nil {
		t.Fatalf("Issue: %v", err)
	}
	if want := clock.Now().Add(5 * time.Minute); !exp.Equal(want) {
		t.Errorf("expires at %s, want %s", exp, want)
	}
	got, err := w.Parse(token)
	if err != nil || got != user {
		t.Fatalf("Parse = %s, %v; want %s", got, err, user)
	}

	var claims jwt.RegisteredClaims
	parsed, _, err := jwt.NewParser().ParseUnverified(token, &claims)
	if err != nil {
		t.Fatalf("ParseUnverified: %v", err)
	}
	if alg := parsed.Header["alg"]; alg != "HS256" {
		t.Errorf("alg %v, want HS256", alg)
	}
	if claims.Subject != user.String() || claims.Issuer != "taki" ||
		len(claims.Audience) != 1 || claims.Audience[0] != "taki-ws" {
		t.Errorf("claims %+v", claims)
	}
	if claims.IssuedAt == nil || !claims.IssuedAt.Equal(clock.Now()) {
		t.Errorf("iat %v, want %s", claims.IssuedAt, clock.Now())
	}
	if claims.ExpiresAt == nil || !claims.ExpiresAt.Equal(exp) {
		t.Errorf("exp %v, want %s", claims.ExpiresAt, exp)
	}
	other, _, err := w.Issue(user)
	if err != nil {
		t.Fatalf("Issue: %v", err)
	}
	var otherClaims jwt.RegisteredClaims
	if _, _, err := jwt.NewParser().ParseUnverified(other, &otherClaims); err != nil {
		t.Fatalf("ParseUnverified: %v", err)
	}
	if claims.ID == "" || claims.ID == otherClaims.ID {
		t.Errorf("jti %q and %q: want distinct random ids", claims.ID, otherClaims.ID)
	}
}

func TestWSTokenExpires(t *testing.T) {
	clock := newTestClock()
	w := newTestWSTokens(t, clock)
	token, _, err := w.Issue(uuid.New())
	if err != nil {
		t.Fatalf("Issue: %v", err)
	}
	clock.Advance(5*time.Minute - time.Second)
	if _, err := w.Parse(token); err != nil {
		t.Fatalf("Parse before expiry: %v", err)
	}
	clock.Advance(time.Second)
	if _, err := w.Parse(token); !errors.Is(err, ErrInvalidWSToken) {
		t.Fatalf("Parse at expiry: %v, want ErrInvalidWSToken", err)
	}
}

func TestWSTokenRefusesForgeries(t *testing.T) {
	clock := newTestClock()
	w := newTestWSTokens(t, clock)
	user := uuid.New()
	good := validClaims(clock, user)
	with := func(f func(*jwt.RegisteredClaims)) jwt.RegisteredClaims {
		c := good
		f(&c)
		return c
	}
	valid := sign(t, jwt.SigningMethodHS256, testSecret(), good)
	if _, err := w.Parse(valid); err != nil {
		t.Fatalf("the control token is refused: %v", err)
	}
	parts := strings.Split(valid, ".")
	otherPayload := strings.Split(sign(t, jwt.SigningMethodHS256, testSecret(),
		with(func(c *jwt.RegisteredClaims) { c.Subject = uuid.NewString() })), ".")[1]

	cases := map[string]string{
		"alg none": sign(t, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, good),
		"HS512":    sign(t, jwt.SigningMethodHS512, testSecret(), good),
		"HS384":    sign(t, jwt.SigningMethodHS384, testSecret(), good),
		"other secret": sign(t, jwt.SigningMethodHS256,
			bytes.Repeat([]byte("o"), MinSecretLen), good),
		"payload swapped": parts[0] + "." + otherPayload + "." + parts[2],
		"no signature":    parts[0] + "." + parts[1] + ".",
		"wrong audience": sign(t, jwt.SigningMethodHS256, testSecret(),
			with(func(c *jwt.RegisteredClaims) { c.Audience = jwt.ClaimStrings{"taki-api"} })),
		"no audience": sign(t, jwt.SigningMethodHS256, testSecret(),
			with(func(c *jwt.RegisteredClaims) { c.Audience = nil })),
		"wrong issuer": sign(t, jwt.SigningMethodHS256, testSecret(),
			with(func(c *jwt.RegisteredClaims) { c.Issuer = "someone" })),
		"no expiry": sign(t, jwt.SigningMethodHS256, testSecret(),
			with(func(c *jwt.RegisteredClaims) { c.ExpiresAt = nil })),
		"expired": sign(t, jwt.SigningMethodHS256, testSecret(),
			with(func(c *jwt.RegisteredClaims) { c.ExpiresAt = jwt.NewNumericDate(clock.Now().Add(-time.Second)) })),
		"issued in the future": sign(t, jwt.SigningMethodHS256, testSecret(),
			with(func(c *jwt.RegisteredClaims) { c.IssuedAt = jwt.NewNumericDate(clock.Now().Add(time.Minute)) })),
		"subject not a uuid": sign(t, jwt.SigningMethodHS256, testSecret(),
			with(func(c *jwt.RegisteredClaims) { c.Subject = "admin" })),
		"nil subject": sign(t, jwt.SigningMethodHS256, testSecret(),
			with(func(c *jwt.RegisteredClaims) { c.Subject = uuid.Nil.String() })),
		"empty":    "",
		"garbage":  "not.a.jwt",
		"too long": valid + strings.Repeat("A", maxWSTokenLen),
	}
	for name, token := range cases {
		t.Run(name, func(t *testing.T) {
			id, err := w.Parse(token)
			if !errors.Is(err, ErrInvalidWSToken) || id != uuid.Nil {
				t.Fatalf("Parse = %s, %v; want uuid.Nil and ErrInvalidWSToken", id, err)
			}
			t.Logf("refused: %v", err)
		})
	}
}

func TestWSTokenRefusesRSAConfusion(t *testing.T) {
	clock := newTestClock()
	w := newTestWSTokens(t, clock)
	// A token that claims RS256 must not be checked as HMAC with our secret as a "public key".
	header := `{"alg":"RS256","typ":"JWT"}`
	enc := base64.RawURLEncoding.EncodeToString
	unsigned := sign(t, jwt.SigningMethodHS256, testSecret(), validClaims(clock, uuid.New()))
	parts := strings.Split(unsigned, ".")
	forged := enc([]byte(header)) + "." + parts[1] + "." + parts[2]
	if _, err := w.Parse(forged); !errors.Is(err, ErrInvalidWSToken) {
		t.Fatalf("Parse(RS256) = %v, want ErrInvalidWSToken", err)
	}
}

func TestNewWSTokensRefusesBadInput(t *testing.T) {
	clock := newTestClock()
	if _, err := NewWSTokens(bytes.Repeat([]byte("k"), MinSecretLen-1), clock.Now, 0); err == nil {
		t.Error("accepted a 31-byte secret")
	}
	if _, err := NewWSTokens(nil, clock.Now, 0); err == nil {
		t.Error("accepted no secret")
	}
	if _, err := NewWSTokens(testSecret(), nil, 0); err == nil {
		t.Error("accepted a nil clock")
	}
	if _, err := NewWSTokens(testSecret(), clock.Now, MaxWSTokenTTL+time.Second); err == nil {
		t.Error("accepted a ttl over 5 minutes")
	}
	if _, err := NewWSTokens(testSecret(), clock.Now, -time.Minute); err == nil {
		t.Error("accepted a negative ttl")
	}
	w, err := NewWSTokens(testSecret(), clock.Now, time.Minute)
	if err != nil {
		t.Fatalf("NewWSTokens(1m): %v", err)
	}
	if _, exp, err := w.Issue(uuid.New()); err != nil || !exp.Equal(clock.Now().Add(time.Minute)) {
		t.Errorf("Issue with 1m ttl: expires %s, %v", exp, err)
	}
	if _, _, err := w.Issue(uuid.Nil); err == nil {
		t.Error("issued a token for uuid.Nil")
	}
}

func TestWSTokensCopyTheSecret(t *testing.T) {
	clock := newTestClock()
	secret := testSecret()
	w, err := NewWSTokens(secret, clock.Now, 0)
	if err != nil {
		t.Fatalf("NewWSTokens: %v", err)
	}
	token, _, err := w.Issue(uuid.New())
	if err != nil {
		t.Fatalf("Issue: %v", err)
	}
	for i := range secret {
		secret[i] = 0
	}
	if _, err := w.Parse(token); err != nil {
		t.Fatalf("changing the caller's buffer changed the key: %v", err)
	}
}
