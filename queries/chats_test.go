package queries

import (
	"maps"
	"math/rand/v2"
	"testing"

	"github.com/google/uuid"
)

func TestReadByCountCountsOtherMembersWhoReachedTheMessage(t *testing.T) {
	ann, bob, cy, dan, gone := uuid.New(), uuid.New(), uuid.New(), uuid.New(), uuid.New()
	c := NewReadCursors(map[uuid.UUID]int64{ann: 5, bob: 3, cy: 3, dan: 0})
	for _, tc := range []struct {
		name   string
		seq    int64
		sender uuid.UUID
		want   int64
	}{
		{"the sender's own cursor does not count", 3, ann, 2},
		{"a sender who has not reached it", 4, bob, 1},
		{"cursors equal to seq count", 3, dan, 3},
		{"a sender no longer a member", 1, gone, 3},
		{"past every cursor", 6, ann, 0},
		{"seq 1 with one member at 0", 1, ann, 2},
	} {
		if got := c.ReadByCount(tc.seq, tc.sender); got != tc.want {
			t.Errorf("%s: ReadByCount(%d) = %d, want %d", tc.name, tc.seq, got, tc.want)
		}
	}
	if !c.Has(dan) || c.Has(gone) {
		t.Errorf("Has: member %v, former member %v", c.Has(dan), c.Has(gone))
	}
	if got := NewReadCursors(nil).ReadByCount(1, ann); got != 0 || NewReadCursors(nil).Has(ann) {
		t.Errorf("no members: ReadByCount %d", got)
	}
}

// ReadCursors' binary search must answer what CountReadBy defines, whoever sends and wherever the
// sender's own cursor stands against the message.
func TestReadCursorsCountLikeCountReadBy(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for trial := range 500 {
		byUser := make(map[uuid.UUID]int64)
		members := make([]uuid.UUID, 0, 20)
		for range r.IntN(20) {
			id := uuid.New()
			byUser[id] = r.Int64N(12)
			members = append(members, id)
		}
		seq := 1 + r.Int64N(12)
		senders := []uuid.UUID{uuid.New()} // not a member
		if len(members) > 0 {
			senders = append(senders, members[r.IntN(len(members))])
		}
		for _, sender := range senders {
			for _, own := range []int64{seq - 1, seq, seq + 1} {
				if _, ok := byUser[sender]; ok {
					byUser[sender] = own
				}
				want := CountReadBy(maps.All(byUser), seq, sender)
				if got := NewReadCursors(maps.Clone(byUser)).ReadByCount(seq, sender); got != want {
					t.Fatalf("trial %d: %d members, seq %d, sender member %v at %d: ReadCursors %d, CountReadBy %d",
						trial, len(byUser), seq, NewReadCursors(byUser).Has(sender), own, got, want)
				}
			}
		}
	}
}
