package queries

import (
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
