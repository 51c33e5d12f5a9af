package auth

import (
	"errors"
	"fmt"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/google/uuid"
)

// WebSocket token claims. The audience keeps a token minted for the socket from being accepted by
// anything else that might one day verify HS256 tokens with the same secret, and the other way round.
const (
	WSTokenAudience = "taki-ws"
	WSTokenIssuer   = "taki"
	// MaxWSTokenTTL caps a token's life: it travels in a URL (?token=), where it may end up in
	// proxies' and browsers' histories, so it must be useless soon after.
	MaxWSTokenTTL = 5 * time.Minute
	// MinSecretLen keeps the HMAC key out of brute-force range (RFC 7518 asks HS256 keys to be at
	// least as long as the hash output).
	MinSecretLen = 32
	// maxWSTokenLen refuses absurd inputs before any parsing; our tokens are about 300 bytes.
	maxWSTokenLen = 2048
)

// ErrInvalidWSToken is what Parse answers for any token it refuses. It says no more on purpose; the
// wrapped cause is for logs.
var ErrInvalidWSToken = errors.New("invalid websocket token")

// WSTokens issues and checks the short-lived JWTs (HS256) that identify a WebSocket client.
type WSTokens struct {
	secret []byte
	now    func() time.Time
	ttl    time.Duration
	parser *jwt.Parser
}

// NewWSTokens returns a WSTokens signing with secret (at least MinSecretLen bytes) and reading the time
// from now. ttl is the tokens' life: 0 means MaxWSTokenTTL, more than MaxWSTokenTTL is refused.
func NewWSTokens(secret []byte, now func() time.Time, ttl time.Duration) (*WSTokens, error) {
	if len(secret) < MinSecretLen {
		return nil, fmt.Errorf("ws tokens: secret must be at least %d bytes, got %d", MinSecretLen, len(secret))
	}
	if now == nil {
		return nil, errors.New("ws tokens: clock is nil")
	}
	if ttl == 0 {
		ttl = MaxWSTokenTTL
	}
	if ttl < time.Second || ttl > MaxWSTokenTTL {
		return nil, fmt.Errorf("ws tokens: ttl must be between 1s and %s, got %s", MaxWSTokenTTL, ttl)
	}
	return &WSTokens{
		// A copy, so that a caller reusing its buffer cannot change the key under us.
		secret: append([]byte(nil), secret...),
		now:    now,
		ttl:    ttl,
		parser: jwt.NewParser(
			// Pinning the one algorithm we sign with refuses "none" and every algorithm-confusion
			// trick (e.g. a token signed with HS512 or claiming RS256).
			jwt.WithValidMethods([]string{jwt.SigningMethodHS256.Alg()}),
			jwt.WithAudience(WSTokenAudience),
			jwt.WithIssuer(WSTokenIssuer),
			jwt.WithExpirationRequired(),
			jwt.WithIssuedAt(),
			jwt.WithTimeFunc(now),
			jwt.WithStrictDecoding(),
		),
	}, nil
}

// WSIdentity is who a WebSocket token identifies: the user, and the session that asked for the token.
// The socket lives no longer than that session (infra/ws closes it with 1008 when the session ends).
type WSIdentity struct {
	UserID    uuid.UUID
	SessionID uuid.UUID // the issuing session's public id
}

// wsClaims are a token's claims: the registered ones and sid, the public id of the session that
// issued the token (never the cookie value).
type wsClaims struct {
	jwt.RegisteredClaims
	SessionID string `json:"sid"`
}

// Issue returns a token identifying userID, on behalf of the session sessionID (its public id), and
// the time it stops being accepted.
func (t *WSTokens) Issue(userID, sessionID uuid.UUID) (string, time.Time, error) {
	if userID == uuid.Nil {
		return "", time.Time{}, errors.New("issue ws token: user id is nil")
	}
	if sessionID == uuid.Nil {
		return "", time.Time{}, errors.New("issue ws token: session id is nil")
	}
	// JWT times have whole seconds; truncating first makes the returned expiry equal the token's.
	now := t.now().Truncate(time.Second)
	exp := now.Add(t.ttl)
	claims := wsClaims{
		RegisteredClaims: jwt.RegisteredClaims{
			Issuer:    WSTokenIssuer,
			Subject:   userID.String(),
			Audience:  jwt.ClaimStrings{WSTokenAudience},
			IssuedAt:  jwt.NewNumericDate(now),
			ExpiresAt: jwt.NewNumericDate(exp),
			ID:        uuid.NewString(),
		},
		SessionID: sessionID.String(),
	}
	signed, err := jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString(t.secret)
	if err != nil {
		return "", time.Time{}, fmt.Errorf("issue ws token: %w", err)
	}
	return signed, exp.UTC(), nil
}

// Parse returns the user and session a token identifies. It refuses (with an error wrapping
// ErrInvalidWSToken) a token with another algorithm, signature, audience or issuer, one without expiry,
// an expired one, one issued in the future, one whose subject is not a user id, and one whose sid is
// missing or not a session id.
//
// A token without sid is refused although its signature is good: Issue always writes one, so such a
// token predates sid (at most MaxWSTokenTTL old when sid came in) and would open a socket that no
// session owns, which nothing could close when the session ends. Its client gets 401 and asks POST
// /ws-tokens for a new one.
func (t *WSTokens) Parse(token string) (WSIdentity, error) {
	if len(token) > maxWSTokenLen {
		return WSIdentity{}, fmt.Errorf("%w: too long", ErrInvalidWSToken)
	}
	var claims wsClaims
	_, err := t.parser.ParseWithClaims(token, &claims, func(*jwt.Token) (any, error) { return t.secret, nil })
	if err != nil {
		return WSIdentity{}, fmt.Errorf("%w: %w", ErrInvalidWSToken, err)
	}
	user, err := uuid.Parse(claims.Subject)
	if err != nil || user == uuid.Nil {
		return WSIdentity{}, fmt.Errorf("%w: subject is not a user id", ErrInvalidWSToken)
	}
	if claims.SessionID == "" {
		return WSIdentity{}, fmt.Errorf("%w: no sid (a token issued before sockets were bound to sessions)", ErrInvalidWSToken)
	}
	sid, err := uuid.Parse(claims.SessionID)
	if err != nil || sid == uuid.Nil {
		return WSIdentity{}, fmt.Errorf("%w: sid is not a session id", ErrInvalidWSToken)
	}
	return WSIdentity{UserID: user, SessionID: sid}, nil
}
