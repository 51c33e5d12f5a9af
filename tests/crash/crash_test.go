package crash

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"taki/infra/postgres/pgtest"
)

const (
	kills        = 5   // SIGKILLs under load
	acksPerRound = 250 // commands acknowledged in each life before it is killed (and after the last restart)
	workers      = 8
	users        = 4
)

// TestKillNineUnderLoad: under a write load, kill -9 the server several times and restart it; after the
// last restart every acknowledged command's events exist exactly once, the read models hold them, and
// `taki projections verify all` finds no difference.
func TestKillNineUnderLoad(t *testing.T) {
	started := time.Now()
	bin := buildTaki(t)
	srv := newTakiServer(t, bin)
	srv.start()
	base, _ := srv.current()

	// Four users in two group chats: a busy one of all four and a smaller one of two, so that several
	// senders race for each chat's next seq.
	us := make([]*user, users)
	for i := range us {
		us[i] = signUp(t, base, i)
	}
	everyone := createChat(t, base, us[0], "everyone", us[1], us[2], us[3])
	pair := createChat(t, base, us[1], "pair", us[2])

	led := newLedger()
	ctx, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	t.Cleanup(func() { stop(); wg.Wait() })
	for i := range workers {
		u := us[i%users]
		chat := everyone
		if i >= users && (u == us[1] || u == us[2]) {
			chat = pair
		}
		w := &worker{n: i, u: u, chatID: chat, srv: srv, led: led}
		wg.Go(func() { w.run(ctx) })
	}

	// Each life is killed only once it has acknowledged its share, while the workers keep sending: the
	// kill lands on requests in flight, on open transactions and on group commits.
	for round := 1; round <= kills; round++ {
		led.waitAcks(t, int64(round*acksPerRound), 30*time.Second)
		srv.kill()
		srv.start()
	}
	led.waitAcks(t, int64((kills+1)*acksPerRound), 30*time.Second)
	stop()
	wg.Wait()

	led.mu.Lock()
	defer led.mu.Unlock()
	for _, p := range led.problems {
		t.Errorf("unexpected answer: %s", p)
	}
	replayed := 0
	for _, m := range led.messages {
		if m.Replayed {
			replayed++
		}
	}
	t.Logf("%d lives, %d kills; acknowledged %d messages (%d of them replays of a send retried after a kill) and %d profile updates; %d transport errors, %d retries",
		srv.lives, kills, len(led.messages), replayed, len(led.profiles), led.transportErrors.Load(), led.retries.Load())

	if led.transportErrors.Load() == 0 {
		t.Error("no command was cut off by a kill: the kills did not land on work in flight")
	}

	pool := pgtest.NewPool(t, dbURL)
	checkMessagesInLog(t, pool, led.messages)
	checkProfilesInLog(t, pool, led.profiles)
	checkStreams(t, pool)
	waitProjections(t, pool)
	checkChatReadModel(t, pool, led.messages)
	verifyProjections(t, bin)
	t.Logf("took %s", time.Since(started).Round(time.Millisecond))
}

// logMessage is one message.sent event as the log holds it.
type logMessage struct {
	ChatID, SenderID, ClientMsgID string
	Seq                           int64
}

// checkMessagesInLog: every acknowledged message has exactly one message.sent event, with the id, chat
// and seq the client was told; no send was stored twice under one client_msg_id; every chat's seqs are
// 1..n with no gap and no duplicate.
func checkMessagesInLog(t *testing.T, pool *pgxpool.Pool, acked []ackedMessage) {
	t.Helper()
	rows, err := pool.Query(context.Background(), `SELECT payload->>'message_id', payload->>'chat_id', payload->>'sender_id',
		COALESCE(payload->>'client_msg_id', ''), (payload->>'seq')::bigint FROM events WHERE event_type = 'message.sent'`)
	if err != nil {
		t.Fatal(err)
	}
	byID := map[string][]logMessage{}
	byClientID := map[string][]string{}
	seqs := map[string][]int64{}
	n := 0
	for rows.Next() {
		var id string
		var m logMessage
		if err := rows.Scan(&id, &m.ChatID, &m.SenderID, &m.ClientMsgID, &m.Seq); err != nil {
			t.Fatal(err)
		}
		n++
		byID[id] = append(byID[id], m)
		key := m.ChatID + "/" + m.SenderID + "/" + m.ClientMsgID
		byClientID[key] = append(byClientID[key], id)
		seqs[m.ChatID] = append(seqs[m.ChatID], m.Seq)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	t.Logf("log: %d message.sent events for %d acknowledged sends", n, len(acked))

	for _, a := range acked {
		got := byID[a.ID]
		switch {
		case len(got) != 1:
			t.Errorf("acknowledged message %s (%s, seq %d, replayed %v) has %d message.sent events, want 1", a.ID, a.ClientMsgID, a.Seq, a.Replayed, len(got))
		case got[0] != logMessage{ChatID: a.ChatID, SenderID: a.SenderID, ClientMsgID: a.ClientMsgID, Seq: a.Seq}:
			t.Errorf("acknowledged message %s: log has %+v, the client was told %+v", a.ID, got[0], a)
		}
	}
	for id, ms := range byID {
		if len(ms) > 1 {
			t.Errorf("message %s has %d message.sent events: %+v", id, len(ms), ms)
		}
	}
	for key, ids := range byClientID {
		if len(ids) > 1 {
			t.Errorf("client_msg_id %s was stored %d times: %v", key, len(ids), ids)
		}
	}
	for chat, s := range seqs {
		slices.Sort(s)
		for i, seq := range s {
			if seq != int64(i+1) {
				t.Errorf("chat %s: seqs are not 1..%d without gaps or duplicates: position %d holds %d (around it: %v)", chat, len(s), i+1, seq, s[max(0, i-3):min(len(s), i+3)])
				break
			}
		}
	}
}

// checkProfilesInLog: every acknowledged profile update has exactly one user.profile_updated event,
// and no update (each display name was sent once) was stored twice.
func checkProfilesInLog(t *testing.T, pool *pgxpool.Pool, acked []string) {
	t.Helper()
	rows, err := pool.Query(context.Background(), `SELECT payload->>'display_name' FROM events
		WHERE event_type = 'user.profile_updated' AND payload->>'display_name' IS NOT NULL`)
	if err != nil {
		t.Fatal(err)
	}
	count := map[string]int{}
	for rows.Next() {
		var name string
		if err := rows.Scan(&name); err != nil {
			t.Fatal(err)
		}
		count[name]++
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	for _, name := range acked {
		if count[name] != 1 {
			t.Errorf("acknowledged profile update %q has %d user.profile_updated events, want 1", name, count[name])
		}
	}
	for name, c := range count {
		if c > 1 {
			t.Errorf("profile update %q was stored %d times", name, c)
		}
	}
}

// checkStreams: within every stream the versions are 1..n, so no append was half done or doubled.
func checkStreams(t *testing.T, pool *pgxpool.Pool) {
	t.Helper()
	rows, err := pool.Query(context.Background(), `SELECT stream_id::text, count(*), min(version), max(version) FROM events
		GROUP BY stream_id HAVING min(version) <> 1 OR max(version) <> count(*)`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	for rows.Next() {
		var id string
		var n, lo, hi int64
		if err := rows.Scan(&id, &n, &lo, &hi); err != nil {
			t.Fatal(err)
		}
		t.Errorf("stream %s: %d events with versions %d..%d, want 1..%d", id, n, lo, hi, n)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
}

// projectionGroups are the consumer groups whose read models the checks read.
var projectionGroups = []string{"users", "chats", "payments"}

// waitProjections waits until every projection's committed checkpoint is at the head of the log (the
// load has stopped, so the head no longer moves), polling with a deadline.
func waitProjections(t *testing.T, pool *pgxpool.Pool) {
	t.Helper()
	deadline := time.NewTimer(30 * time.Second)
	defer deadline.Stop()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		lag := map[string]int64{}
		behind := false
		for _, g := range projectionGroups {
			var n int64
			err := pool.QueryRow(context.Background(), `SELECT count(*) FROM events WHERE (transaction_id, "offset") >
				COALESCE((SELECT (last_processed_transaction_id, COALESCE(offset_acked, 0)) FROM events_offsets WHERE consumer_group = $1), ('0'::xid8, 0::bigint))`, g).Scan(&n)
			if err != nil {
				t.Fatal(err)
			}
			lag[g] = n
			behind = behind || n > 0
		}
		if !behind {
			return
		}
		select {
		case <-deadline.C:
			t.Fatalf("projections still behind after 30s: %v", lag)
		case <-tick.C:
		}
	}
}

// checkChatReadModel: the chats read model holds every acknowledged message where the client was told,
// exactly as many messages as the log, and each chat's last_seq is its newest seq.
func checkChatReadModel(t *testing.T, pool *pgxpool.Pool, acked []ackedMessage) {
	t.Helper()
	ctx := context.Background()
	rows, err := pool.Query(ctx, `SELECT id::text, chat_id::text, seq FROM chat_messages`)
	if err != nil {
		t.Fatal(err)
	}
	type place struct {
		chat string
		seq  int64
	}
	stored := map[string]place{}
	for rows.Next() {
		var id string
		var p place
		if err := rows.Scan(&id, &p.chat, &p.seq); err != nil {
			t.Fatal(err)
		}
		stored[id] = p
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	for _, a := range acked {
		if p, ok := stored[a.ID]; !ok || p != (place{a.ChatID, a.Seq}) {
			t.Errorf("acknowledged message %s (chat %s seq %d): chat_messages has %+v (present %v)", a.ID, a.ChatID, a.Seq, p, ok)
		}
	}
	var inLog int
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM events WHERE event_type = 'message.sent'`).Scan(&inLog); err != nil {
		t.Fatal(err)
	}
	if len(stored) != inLog {
		t.Errorf("chat_messages holds %d messages, the log %d", len(stored), inLog)
	}
	var wrong []string
	rows, err = pool.Query(ctx, `SELECT c.id::text, c.last_seq, COALESCE(max(m.seq), 0) FROM chats c
		LEFT JOIN chat_messages m ON m.chat_id = c.id GROUP BY c.id, c.last_seq HAVING c.last_seq <> COALESCE(max(m.seq), 0)`)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var id string
		var last, newest int64
		if err := rows.Scan(&id, &last, &newest); err != nil {
			t.Fatal(err)
		}
		wrong = append(wrong, fmt.Sprintf("chat %s last_seq %d, newest message %d", id, last, newest))
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	for _, w := range wrong {
		t.Error(w)
	}
}

// verifyProjections runs `taki projections verify all`: it rebuilds every read model from the log into
// scratch tables and diffs them with the live ones; exit 0 and "no difference" mean they are equal.
func verifyProjections(t *testing.T, bin string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, errOut, err := runTaki(ctx, bin, "projections", "verify", "all")
	if err != nil {
		t.Fatalf("taki projections verify all: %v\nstdout:\n%s\nstderr:\n%s", err, out, errOut)
	}
	if !strings.Contains(out, "no difference") {
		t.Fatalf("taki projections verify all exited 0 but did not report no difference:\n%s", out)
	}
	t.Logf("verify: %s", strings.TrimSpace(out))
}
