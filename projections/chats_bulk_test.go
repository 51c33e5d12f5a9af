package projections

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"taki/events"
	"taki/infra/postgres/pgtest"
)

// randomChatsLog is a log of a few chats where runs of messages are broken, at random, by every other
// kind of chat event: reads, joins, leaves (of any member), edits, deletes, renames, and chats created
// along the way.
func randomChatsLog(rng *rand.Rand, n int) []events.Event {
	f := &chatsFixture{seqs: map[uuid.UUID]int64{}}
	users := make([]uuid.UUID, 6)
	for i := range users {
		users[i] = uuid.New()
	}
	type chat struct {
		id      uuid.UUID
		members []uuid.UUID
		sent    []events.MessageSent
	}
	var chats []*chat
	var log []events.Event
	create := func(i int) {
		c := &chat{id: uuid.New(), members: slices.Clone(users[i%4 : i%4+3])}
		chats = append(chats, c)
		log = append(log, group(c.id, at(i), c.members[0], c.members[1:]...))
	}
	for i := range 2 {
		create(i)
	}
	for i := 0; len(log) < n; i++ {
		if rng.IntN(100) == 0 {
			create(len(chats))
			continue
		}
		c := chats[rng.IntN(len(chats))]
		when := at(10 + i)
		var outside []uuid.UUID
		for _, u := range users {
			if !slices.Contains(c.members, u) {
				outside = append(outside, u)
			}
		}
		switch r := rng.IntN(100); {
		case r < 75 || len(c.sent) == 0:
			m := f.send(c.id, c.members[rng.IntN(len(c.members))], when, "m", "")
			c.sent = append(c.sent, m)
			log = append(log, m)
		case r < 83:
			log = append(log, read(c.id, c.members[rng.IntN(len(c.members))], 1+rng.Int64N(int64(len(c.sent)))))
		case r < 88:
			log = append(log, edited(c.sent[rng.IntN(len(c.sent))], "edited", when))
		case r < 93:
			m := c.sent[rng.IntN(len(c.sent))]
			log = append(log, deleted(m, m.SenderID, when))
		case r < 96 && len(outside) > 0:
			u := outside[rng.IntN(len(outside))]
			c.members = append(c.members, u)
			log = append(log, events.ChatMemberAdded{ChatID: c.id, UserID: u, Role: events.ChatRoleMember,
				AddedBy: c.members[0], LastReadSeq: int64(len(c.sent)), At: when})
		case r < 98 && len(c.members) > 2:
			k := rng.IntN(len(c.members))
			u := c.members[k]
			c.members = slices.Delete(c.members, k, k+1)
			log = append(log, events.ChatMemberRemoved{ChatID: c.id, UserID: u, RemovedBy: u})
		default:
			log = append(log, events.ChatRenamed{ChatID: c.id, Title: "renamed", RenamedBy: c.members[0]})
		}
	}
	return log
}

// ApplyAll (replay's bulk path) must leave exactly what Apply of each event leaves, however the log is
// cut into batches, and applying a batch twice must change nothing.
func TestChatsApplyAllEqualsApply(t *testing.T) {
	for seed := range uint64(8) {
		t.Run(fmt.Sprint("seed ", seed), func(t *testing.T) {
			t.Parallel()
			testApplyAllEqualsApply(t, seed)
		})
	}
}

func testApplyAllEqualsApply(t *testing.T, seed uint64) {
	rng := rand.New(rand.NewPCG(7, seed))
	log := randomChatsLog(rng, 600)
	envs := make([]events.Envelope, len(log))
	for i, ev := range log {
		envs[i] = events.Envelope{ID: uuid.New(), Type: ev.EventType(), Data: ev}
	}

	one := newChatsFixture(t, pgtest.NewDatabase(t))
	one.apply(log...)

	// The same batches through ApplyAll, once each and (to show a second application changes
	// nothing) twice each. Apart: in one pipeline, the second pass could repair what the first missed.
	bulk := newChatsFixture(t, pgtest.NewDatabase(t))
	twice := newChatsFixture(t, pgtest.NewDatabase(t))
	ctx := context.Background()
	for rest := envs; len(rest) > 0; {
		n := min(len(rest), 1+rng.IntN(80))
		for times, f := range []*chatsFixture{bulk, twice} {
			b := &pgx.Batch{}
			for range times + 1 {
				if err := f.chats.ApplyAll(b, rest[:n]); err != nil {
					t.Fatal(err)
				}
			}
			if err := pgx.BeginFunc(ctx, f.pool, func(tx pgx.Tx) error { return tx.SendBatch(ctx, b).Close() }); err != nil {
				t.Fatal(err)
			}
		}
		rest = rest[n:]
	}

	d1, d2, d3 := dumpChats(t, one.pool), dumpChats(t, bulk.pool), dumpChats(t, twice.pool)
	if d1 != d2 {
		t.Fatalf("Apply of each:\n%s\nApplyAll:\n%s", d1, d2)
	}
	if d2 != d3 {
		t.Fatalf("ApplyAll once:\n%s\nApplyAll twice:\n%s", d2, d3)
	}
	// Both against the definition: the non-deleted messages of others above the member's cursor.
	var unread int64
	for key, want := range unreadOracle(log) {
		chat, user := key[0], key[1]
		if got, gotBulk := one.unread(user, chat), bulk.unread(user, chat); got != want || gotBulk != want {
			t.Fatalf("chat %s, member %s: unread %d (Apply), %d (ApplyAll); the log says %d", chat, user, got, gotBulk, want)
		}
		unread += want
	}
	if unread == 0 {
		t.Fatal("the log should leave unread messages: the comparison would say little")
	}
}

// unreadOracle is each current member's unread count by its definition, from the log alone: keyed by
// chat id, then user id.
func unreadOracle(log []events.Event) map[[2]uuid.UUID]int64 {
	type message struct {
		sender  uuid.UUID
		deleted bool
	}
	cursors := map[[2]uuid.UUID]int64{}
	messages := map[uuid.UUID][]message{} // by chat, index seq-1
	for _, ev := range log {
		switch ev := ev.(type) {
		case events.ChatCreated:
			for _, m := range ev.Members {
				cursors[[2]uuid.UUID{ev.ChatID, m.UserID}] = 0
			}
		case events.ChatMemberAdded:
			cursors[[2]uuid.UUID{ev.ChatID, ev.UserID}] = ev.LastReadSeq
		case events.ChatMemberRemoved:
			delete(cursors, [2]uuid.UUID{ev.ChatID, ev.UserID})
		case events.ChatRead:
			k := [2]uuid.UUID{ev.ChatID, ev.UserID}
			cursors[k] = max(cursors[k], ev.UpToSeq)
		case events.MessageSent:
			messages[ev.ChatID] = append(messages[ev.ChatID], message{sender: ev.SenderID})
		case events.MessageDeleted:
			messages[ev.ChatID][ev.Seq-1].deleted = true
		}
	}
	out := make(map[[2]uuid.UUID]int64, len(cursors))
	for k, cursor := range cursors {
		var n int64
		for i, m := range messages[k[0]] {
			if int64(i+1) > cursor && m.sender != k[1] && !m.deleted {
				n++
			}
		}
		out[k] = n
	}
	return out
}
