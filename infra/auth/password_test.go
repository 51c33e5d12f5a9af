package auth

import (
	"strings"
	"sync"
	"testing"
)

// cheapPasswords keeps tests fast; production uses the OWASP defaults tested below.
func cheapPasswords() PasswordConfig {
	return PasswordConfig{MemoryKiB: 64, Iterations: 1, Parallelism: 1}
}

func newCheapHasher(t *testing.T) *Hasher {
	t.Helper()
	h, err := NewHasher(cheapPasswords())
	if err != nil {
		t.Fatalf("NewHasher: %v", err)
	}
	return h
}

func TestPasswordDefaultsAreOWASP(t *testing.T) {
	h, err := NewHasher(PasswordConfig{})
	if err != nil {
		t.Fatalf("NewHasher: %v", err)
	}
	encoded, err := h.Hash("correct horse battery staple")
	if err != nil {
		t.Fatalf("Hash: %v", err)
	}
	if !strings.HasPrefix(encoded, "$argon2id$v=19$m=19456,t=2,p=1$") {
		t.Fatalf("hash %q does not use argon2id with m=19 MiB, t=2, p=1", encoded)
	}
	if h.params.SaltLength != 16 || h.params.KeyLength != 32 {
		t.Fatalf("salt %d, key %d bytes; want 16 and 32", h.params.SaltLength, h.params.KeyLength)
	}
}

func TestHashAndVerify(t *testing.T) {
	h := newCheapHasher(t)
	for _, pw := range []string{"hunter22", "pässwörd with ünïcode 🔑", strings.Repeat("x", 128)} {
		encoded, err := h.Hash(pw)
		if err != nil {
			t.Fatalf("Hash: %v", err)
		}
		if strings.Contains(encoded, pw) {
			t.Fatalf("hash contains the password")
		}
		if ok, err := h.Verify(pw, encoded); err != nil || !ok {
			t.Fatalf("Verify(right password) = %v, %v; want true", ok, err)
		}
		if ok, err := h.Verify(pw+"!", encoded); err != nil || ok {
			t.Fatalf("Verify(wrong password) = %v, %v; want false", ok, err)
		}
		again, err := h.Hash(pw)
		if err != nil {
			t.Fatalf("Hash: %v", err)
		}
		if again == encoded {
			t.Fatal("two hashes of one password are equal: the salt is not random")
		}
	}
}

func TestVerifyRefusesMalformedHashes(t *testing.T) {
	h := newCheapHasher(t)
	for _, bad := range []string{
		"",
		"plain text",
		"$2a$10$N9qo8uLOickgx2ZMRZoMyeIjZAgcfl7p92ldGxad68LJZdL17lhWy", // bcrypt
		"$argon2id$v=19$m=64,t=1,p=1$not-base64!$also-not",
		"$argon2i$v=19$m=64,t=1,p=1$c29tZXNhbHQ$RdescudvJCsgt3ub+b+dWRWJTmaaJObG",
	} {
		ok, err := h.Verify("pw", bad)
		if err == nil || ok {
			t.Errorf("Verify(%q) = %v, %v; want false and an error", bad, ok, err)
		}
	}
}

func TestVerifyRefusesExcessiveCost(t *testing.T) {
	h := newCheapHasher(t)
	// 4 GiB: computing it would be the attack; it must be refused before any work.
	huge := "$argon2id$v=19$m=4194304,t=1,p=1$c29tZXNhbHRzb21lc2FsdA$RdescudvJCsgt3ub+b+dWRWJTmaaJObGRdescudvJCs"
	if ok, err := h.Verify("pw", huge); err == nil || ok {
		t.Fatalf("Verify(4 GiB hash) = %v, %v; want an error", ok, err)
	}
}

func TestVerifyDummyUsesCurrentParameters(t *testing.T) {
	h := newCheapHasher(t)
	// The dummy costs what a real verification costs only if it has the same parameters.
	if h.NeedsRehash(h.dummy) {
		t.Fatalf("dummy hash %q does not use the hasher's parameters", h.dummy)
	}
	h.VerifyDummy("anything")
	if ok, _ := h.Verify("", h.dummy); ok {
		t.Fatal("the dummy hash matches the empty password")
	}
}

func TestNeedsRehash(t *testing.T) {
	old := newCheapHasher(t)
	cfg := cheapPasswords()
	cfg.Iterations = 2
	stronger, err := NewHasher(cfg)
	if err != nil {
		t.Fatalf("NewHasher: %v", err)
	}
	encoded, err := old.Hash("pw")
	if err != nil {
		t.Fatalf("Hash: %v", err)
	}
	if old.NeedsRehash(encoded) {
		t.Error("NeedsRehash with the same parameters = true")
	}
	if !stronger.NeedsRehash(encoded) {
		t.Error("NeedsRehash after raising the cost = false")
	}
	if !old.NeedsRehash("garbage") {
		t.Error("NeedsRehash(garbage) = false")
	}
	// A hash made with the old cost still verifies after the cost was raised.
	if ok, err := stronger.Verify("pw", encoded); err != nil || !ok {
		t.Errorf("Verify(old hash) = %v, %v", ok, err)
	}
}

func TestNewHasherRefusesWeakConfig(t *testing.T) {
	for name, cfg := range map[string]PasswordConfig{
		"short salt":           {MemoryKiB: 64, SaltLength: 8},
		"short key":            {MemoryKiB: 64, KeyLength: 8},
		"memory below 8/lane":  {MemoryKiB: 8, Parallelism: 2},
		"negative concurrency": {MemoryKiB: 64, MaxConcurrent: -1},
		"absurd memory":        {MemoryKiB: 4 * 1024 * 1024},
	} {
		if _, err := NewHasher(cfg); err == nil {
			t.Errorf("%s: NewHasher accepted %+v", name, cfg)
		}
	}
}

func TestHasherConcurrentUseReleasesSlots(t *testing.T) {
	cfg := cheapPasswords()
	cfg.MaxConcurrent = 1
	h, err := NewHasher(cfg)
	if err != nil {
		t.Fatalf("NewHasher: %v", err)
	}
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			encoded, err := h.Hash("pw")
			if err != nil {
				t.Errorf("Hash: %v", err)
				return
			}
			if ok, err := h.Verify("pw", encoded); err != nil || !ok {
				t.Errorf("Verify = %v, %v", ok, err)
			}
			h.VerifyDummy("pw")
		})
	}
	wg.Wait()
	if len(h.slots) != 0 {
		t.Fatalf("%d hashing slots leaked", len(h.slots))
	}
}
