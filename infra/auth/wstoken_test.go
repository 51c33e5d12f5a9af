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

func validClaims(clock *testClock, sub uuid.UUID) wsClaims {
	now := clock.Now()
	return wsClaims{
		RegisteredClaims: jwt.RegisteredClaims{
			Issuer:    WSTokenIssuer,
			Subject:   sub.String(),
			Audience:  jwt.ClaimStrings{WSTokenAudience},
			IssuedAt:  jwt.NewNumericDate(now),
			ExpiresAt: jwt.NewNumericDate(now.Add(time.Minute)),
			ID:        "jti",
		},
		SessionID: uuid.NewString(),
	}
}

func TestWSTokenRoundTripAndClaims(t *testing.T) {
	clock := newTestClock()
	w := newTestWSTokens(t, clock)
	user, sid := uuid.New(), uuid.New()
	token, exp, err := w.Issue(user, sid)
	if err != nil {
		t.Fatalf("Issue: %v", err)
	}
	if want := clock.Now().Add(5 * time.Minute); !exp.Equal(want) {
		t.Errorf("expires at %s, want %s", exp, want)
	}
	got, err := w.Parse(token)
	if err != nil || got != (WSIdentity{UserID: user, SessionID: sid}) {
		t.Fatalf("Parse = %+v, %v; want user %s, session %s", got, err, user, sid)
	}

	var claims wsClaims
	parsed, _, err := jwt.NewParser().ParseUnverified(token, &claims)
	if err != nil {
		t.Fatalf("ParseUnverified: %v", err)
	}
	if alg := parsed.Header["alg"]; alg != "HS256" {
		t.Errorf("alg %v, want HS256", alg)
	}
	if claims.Subject != user.String() || claims.Issuer != "taki" ||
		len(claims.Audience) != 1 || claims.Audience[0] != "taki-ws" || claims.SessionID != sid.String() {
		t.Errorf("claims %+v", claims)
	}
	if claims.IssuedAt == nil || !claims.IssuedAt.Equal(clock.Now()) {
		t.Errorf("iat %v, want %s", claims.IssuedAt, clock.Now())
	}
	if claims.ExpiresAt == nil || !claims.ExpiresAt.Equal(exp) {
		t.Errorf("exp %v, want %s", claims.ExpiresAt, exp)
	}
	other, _, err := w.Issue(user, sid)
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
	token, _, err := w.Issue(uuid.New(), uuid.New())
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
	with := func(f func(*wsClaims)) wsClaims {
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
		with(func(c *wsClaims) { c.Subject = uuid.NewString() })), ".")[1]

	cases := map[string]string{
		"alg none": sign(t, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, good),
		"HS512":    sign(t, jwt.SigningMethodHS512, testSecret(), good),
		"HS384":    sign(t, jwt.SigningMethodHS384, testSecret(), good),
		"other secret": sign(t, jwt.SigningMethodHS256,
			bytes.Repeat([]byte("o"), MinSecretLen), good),
		"payload swapped": parts[0] + "." + otherPayload + "." + parts[2],
		"no signature":    parts[0] + "." + parts[1] + ".",
		"wrong audience": sign(t, jwt.SigningMethodHS256, testSecret(),
			with(func(c *wsClaims) { c.Audience = jwt.ClaimStrings{"taki-api"} })),
		"no audience": sign(t, jwt.SigningMethodHS256, testSecret(),
			with(func(c *wsClaims) { c.Audience = nil })),
		"wrong issuer": sign(t, jwt.SigningMethodHS256, testSecret(),
			with(func(c *wsClaims) { c.Issuer = "someone" })),
		"no expiry": sign(t, jwt.SigningMethodHS256, testSecret(),
			with(func(c *wsClaims) { c.ExpiresAt = nil })),
		"expired": sign(t, jwt.SigningMethodHS256, testSecret(),
			with(func(c *wsClaims) { c.ExpiresAt = jwt.NewNumericDate(clock.Now().Add(-time.Second)) })),
		"issued in the future": sign(t, jwt.SigningMethodHS256, testSecret(),
			with(func(c *wsClaims) { c.IssuedAt = jwt.NewNumericDate(clock.Now().Add(time.Minute)) })),
		"subject not a uuid": sign(t, jwt.SigningMethodHS256, testSecret(),
			with(func(c *wsClaims) { c.Subject = "admin" })),
		"nil subject": sign(t, jwt.SigningMethodHS256, testSecret(),
			with(func(c *wsClaims) { c.Subject = uuid.Nil.String() })),
		// Issue always writes sid; a token without one predates it and may not open a socket that no
		// session owns.
		"no sid": sign(t, jwt.SigningMethodHS256, testSecret(), good.RegisteredClaims),
		"empty sid": sign(t, jwt.SigningMethodHS256, testSecret(),
			with(func(c *wsClaims) { c.SessionID = "" })),
		"sid not a uuid": sign(t, jwt.SigningMethodHS256, testSecret(),
			with(func(c *wsClaims) { c.SessionID = "current" })),
		"nil sid": sign(t, jwt.SigningMethodHS256, testSecret(),
			with(func(c *wsClaims) { c.SessionID = uuid.Nil.String() })),
		"sid not a string": sign(t, jwt.SigningMethodHS256, testSecret(), jwt.MapClaims{
			"iss": WSTokenIssuer, "sub": user.String(), "aud": WSTokenAudience, "jti": "jti", "sid": 42,
			"iat": clock.Now().Unix(), "exp": clock.Now().Add(time.Minute).Unix()}),
		"empty":    "",
		"garbage":  "not.a.jwt",
		"too long": valid + strings.Repeat("A", maxWSTokenLen),
	}
	for name, token := range cases {
		t.Run(name, func(t *testing.T) {
			id, err := w.Parse(token)
			if !errors.Is(err, ErrInvalidWSToken) || id != (WSIdentity{}) {
				t.Fatalf("Parse = %+v, %v; want no identity and ErrInvalidWSToken", id, err)
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
	if _, exp, err := w.Issue(uuid.New(), uuid.New()); err != nil || !exp.Equal(clock.Now().Add(time.Minute)) {
		t.Errorf("Issue with 1m ttl: expires %s, %v", exp, err)
	}
	if _, _, err := w.Issue(uuid.Nil, uuid.New()); err == nil {
		t.Error("issued a token for uuid.Nil")
	}
	if _, _, err := w.Issue(uuid.New(), uuid.Nil); err == nil {
		t.Error("issued a token without a session")
	}
}

func TestWSTokensCopyTheSecret(t *testing.T) {
	clock := newTestClock()
	secret := testSecret()
	w, err := NewWSTokens(secret, clock.Now, 0)
	if err != nil {
		t.Fatalf("NewWSTokens: %v", err)
	}
	token, _, err := w.Issue(uuid.New(), uuid.New())
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
