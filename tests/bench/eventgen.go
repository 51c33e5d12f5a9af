package main

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/google/uuid"

	"taki/events"
)

// genEvent is one generated row of the event log (the columns that vary).
type genEvent struct {
	EventID    uuid.UUID
	StreamID   uuid.UUID
	Version    int64
	Type       string
	OccurredAt time.Time
	Payload    []byte
}

// genUser is one user stream being generated.
type genUser struct {
	id    uuid.UUID
	n     int
	next  int64 // the version of the stream's next event
	left  int   // events still to generate for it
	email string
}

// LogStats is what a generated log holds, for checking the read model built from it.
type LogStats struct {
	Users          int
	Events         int
	ProfileUpdates int
	Logins         int
	// Avatars counts users whose final profile has an avatar.
	Avatars int
}

// logGenerator produces a users' event log: every user stream starts with user.registered and goes on
// with user.logged_in and user.profile_updated events. Streams are interleaved at random, as users act
// concurrently, so registrations happen throughout the log and not all up front.
type logGenerator struct {
	rng    *rand.Rand
	users  []genUser
	active []int // indices into users of the streams with events left
	at     time.Time
	stats  LogStats
	avatar []bool
}

// eventsPerUser gives 20,000 users for the default 200,000 events.
const eventsPerUser = 10

// newLogGenerator plans total events over total/eventsPerUser users (at least one). Each user gets its
// registration plus a uniformly random share of the rest, so stream lengths vary as they do in life.
func newLogGenerator(total int, seed uint64) *logGenerator {
	nUsers := max(1, total/eventsPerUser)
	g := &logGenerator{
		rng:    rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)),
		users:  make([]genUser, nUsers),
		active: make([]int, nUsers),
		at:     time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC),
		avatar: make([]bool, nUsers),
	}
	for i := range g.users {
		g.users[i] = genUser{id: g.uuid(), n: i, next: 1, left: 1, email: fmt.Sprintf("user%d@bench.taki.example", i)}
		g.active[i] = i
	}
	for range total - nUsers {
		g.users[g.rng.IntN(nUsers)].left++
	}
	g.stats.Users = nUsers
	return g
}

// uuid returns a random (version 4) UUID from the generator's source, so that a seed gives one log.
func (g *logGenerator) uuid() uuid.UUID {
	var u uuid.UUID
	hi, lo := g.rng.Uint64(), g.rng.Uint64()
	for i := range 8 {
		u[i], u[8+i] = byte(hi>>(56-8*i)), byte(lo>>(56-8*i))
	}
	u[6] = u[6]&0x0f | 0x40
	u[8] = u[8]&0x3f | 0x80
	return u
}

// Next appends up to n generated events to dst and returns it; an empty result means the log is done.
func (g *logGenerator) Next(dst []genEvent, n int) ([]genEvent, error) {
	for range n {
		if len(g.active) == 0 {
			break
		}
		j := g.rng.IntN(len(g.active))
		u := &g.users[g.active[j]]
		ev, err := g.event(u)
		if err != nil {
			return dst, err
		}
		dst = append(dst, ev)
		u.next++
		u.left--
		if u.left == 0 {
			g.active[j] = g.active[len(g.active)-1]
			g.active = g.active[:len(g.active)-1]
		}
	}
	return dst, nil
}

// Stats describes the events generated so far (the whole log once Next returned nothing).
func (g *logGenerator) Stats() LogStats {
	s := g.stats
	for _, a := range g.avatar {
		if a {
			s.Avatars++
		}
	}
	return s
}

func (g *logGenerator) event(u *genUser) (genEvent, error) {
	g.at = g.at.Add(time.Duration(1+g.rng.IntN(2000)) * time.Millisecond)
	var data events.Event
	switch {
	case u.next == 1:
		data = events.UserRegistered{
			UserID:       u.id,
			Email:        u.email,
			DisplayName:  fmt.Sprintf("User %d", u.n),
			PasswordHash: g.passwordHash(),
			Role:         "member",
			RegisteredAt: g.at,
		}
	case g.rng.IntN(10) < 6:
		data = events.UserLoggedIn{UserID: u.id, At: g.at}
		g.stats.Logins++
	default:
		name := fmt.Sprintf("User %d (%d)", u.n, u.next)
		upd := events.UserProfileUpdated{UserID: u.id, DisplayName: &name}
		if g.rng.IntN(5) == 0 {
			avatar := fmt.Sprintf("https://avatars.example.com/%s/%d.png", u.id, u.next)
			upd.AvatarURL = &avatar
			g.avatar[u.n] = true
		}
		data = upd
		g.stats.ProfileUpdates++
	}
	payload, err := json.Marshal(data)
	if err != nil {
		return genEvent{}, fmt.Errorf("encode %s: %w", data.EventType(), err)
	}
	g.stats.Events++
	return genEvent{
		EventID:    g.uuid(),
		StreamID:   u.id,
		Version:    u.next,
		Type:       data.EventType(),
		OccurredAt: g.at,
		Payload:    payload,
	}, nil
}

// passwordHash returns a string of the shape and size of the server's argon2id hashes (PHC format at
// its default cost). Projections never verify it, so only its bytes in the payload matter.
func (g *logGenerator) passwordHash() string {
	var salt [16]byte
	var key [32]byte
	for i := range salt {
		salt[i] = byte(g.rng.Uint32())
	}
	for i := range key {
		key[i] = byte(g.rng.Uint32())
	}
	return "$argon2id$v=19$m=19456,t=2,p=1$" + base64.RawStdEncoding.EncodeToString(salt[:]) + "$" +
		base64.RawStdEncoding.EncodeToString(key[:])
}
