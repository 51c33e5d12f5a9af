package auth

import (
	"errors"
	"fmt"
	"runtime"

	"github.com/alexedwards/argon2id"
)

// PasswordConfig sets the argon2id cost. The zero value gets OWASP's recommendation for argon2id
// (m=19 MiB, t=2, p=1); tests set cheaper parameters so that they stay fast.
type PasswordConfig struct {
	// MemoryKiB is argon2id's m, in KiB.
	MemoryKiB uint32
	// Iterations is argon2id's t.
	Iterations uint32
	// Parallelism is argon2id's p (lanes).
	Parallelism uint8
	SaltLength  uint32
	KeyLength   uint32
	// MaxConcurrent bounds how many hashes run at once. Every hash holds MemoryKiB of memory for its
	// whole run, so a burst of logins would otherwise be a way to exhaust the process's memory.
	MaxConcurrent int
}

func (c *PasswordConfig) setDefaults() {
	if c.MemoryKiB == 0 {
		c.MemoryKiB = 19 * 1024
	}
	if c.Iterations == 0 {
		c.Iterations = 2
	}
	if c.Parallelism == 0 {
		c.Parallelism = 1
	}
	if c.SaltLength == 0 {
		c.SaltLength = 16
	}
	if c.KeyLength == 0 {
		c.KeyLength = 32
	}
	if c.MaxConcurrent == 0 {
		c.MaxConcurrent = 2 * runtime.GOMAXPROCS(0)
	}
}

func (c PasswordConfig) validate() error {
	var errs []error
	// argon2 needs at least 8 KiB per lane.
	if c.MemoryKiB < 8*uint32(c.Parallelism) {
		errs = append(errs, fmt.Errorf("memory must be at least 8 KiB per lane (MemoryKiB %d)", c.MemoryKiB))
	}
	if c.MemoryKiB > maxHashMemoryKiB {
		errs = append(errs, fmt.Errorf("memory must be at most %d KiB (MemoryKiB %d)", maxHashMemoryKiB, c.MemoryKiB))
	}
	if c.Iterations > maxHashIterations {
		errs = append(errs, fmt.Errorf("iterations must be at most %d (Iterations %d)", maxHashIterations, c.Iterations))
	}
	if c.SaltLength < 16 {
		errs = append(errs, fmt.Errorf("salt must be at least 16 bytes (SaltLength %d)", c.SaltLength))
	}
	if c.KeyLength < 16 {
		errs = append(errs, fmt.Errorf("key must be at least 16 bytes (KeyLength %d)", c.KeyLength))
	}
	if c.MaxConcurrent < 0 {
		errs = append(errs, fmt.Errorf("concurrency bound must not be negative (MaxConcurrent %d)", c.MaxConcurrent))
	}
	return errors.Join(errs...)
}

// Bounds on the cost a stored hash may ask for: a hash row written by someone with database access must
// not turn one login into a request for gigabytes of memory.
const (
	maxHashMemoryKiB  = 1024 * 1024
	maxHashIterations = 64
)

// Hasher hashes and verifies passwords with argon2id. It is safe for concurrent use.
type Hasher struct {
	params *argon2id.Params
	slots  chan struct{}
	// dummy is a hash of a random password with the current parameters, verified against when the
	// account does not exist so that a login for an unknown email costs as long as a real one.
	dummy string
}

// NewHasher returns a Hasher with cfg's parameters (zero fields get the OWASP defaults).
func NewHasher(cfg PasswordConfig) (*Hasher, error) {
	cfg.setDefaults()
	if err := cfg.validate(); err != nil {
		return nil, fmt.Errorf("password hasher config: %w", err)
	}
	h := &Hasher{
		params: &argon2id.Params{
			Memory:      cfg.MemoryKiB,
			Iterations:  cfg.Iterations,
			Parallelism: cfg.Parallelism,
			SaltLength:  cfg.SaltLength,
			KeyLength:   cfg.KeyLength,
		},
		slots: make(chan struct{}, cfg.MaxConcurrent),
	}
	dummy, err := h.Hash(randomToken())
	if err != nil {
		return nil, fmt.Errorf("password hasher: dummy hash: %w", err)
	}
	h.dummy = dummy
	return h, nil
}

// Hash returns the PHC-encoded argon2id hash of password ($argon2id$v=19$m=...,t=...,p=...$salt$key),
// with a fresh random salt.
func (h *Hasher) Hash(password string) (string, error) {
	h.acquire()
	defer h.release()
	encoded, err := argon2id.CreateHash(password, h.params)
	if err != nil {
		return "", fmt.Errorf("hash password: %w", err)
	}
	return encoded, nil
}

// Verify reports whether password matches encodedHash. The key comparison is constant-time. An error
// means encodedHash is malformed or asks for an unreasonable cost, never that the password is wrong.
func (h *Hasher) Verify(password, encodedHash string) (bool, error) {
	params, _, _, err := argon2id.DecodeHash(encodedHash)
	if err != nil {
		return false, fmt.Errorf("verify password: decode hash: %w", err)
	}
	if params.Memory > maxHashMemoryKiB || params.Iterations > maxHashIterations {
		return false, fmt.Errorf("verify password: hash cost m=%d t=%d exceeds the allowed maximum", params.Memory, params.Iterations)
	}
	h.acquire()
	defer h.release()
	ok, err := argon2id.ComparePasswordAndHash(password, encodedHash)
	if err != nil {
		return false, fmt.Errorf("verify password: %w", err)
	}
	return ok, nil
}

// VerifyDummy spends the time of a Verify with the current parameters and always fails. Call it when
// the email is unknown: a login that answers faster for unknown accounts tells an attacker which
// emails are registered.
func (h *Hasher) VerifyDummy(password string) {
	_, _ = h.Verify(password, h.dummy)
}

// NeedsRehash reports whether encodedHash was made with other parameters than the current ones (or is
// unreadable), so that a successful login can store a fresh hash after the cost was raised.
func (h *Hasher) NeedsRehash(encodedHash string) bool {
	p, salt, key, err := argon2id.DecodeHash(encodedHash)
	if err != nil {
		return true
	}
	return p.Memory != h.params.Memory || p.Iterations != h.params.Iterations ||
		p.Parallelism != h.params.Parallelism || uint32(len(salt)) != h.params.SaltLength ||
		uint32(len(key)) != h.params.KeyLength
}

func (h *Hasher) acquire() { h.slots <- struct{}{} }
func (h *Hasher) release() { <-h.slots }
