package main

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/gorilla/websocket"
)

// fanout measures DESIGN.md's "one message to a 1,000-member group reaches every socket, p99 <= 100
// ms": one group of env.FanoutMembers members, each with one open WebSocket (gorilla's client), and
// env.FanoutMessages messages sent one at a time by one member, at most one every env.FanoutInterval.
// For each message and socket, the latency runs from just before the POST is sent to the frame's
// receipt: an upper bound of commit-to-receipt, since it includes the request's way to the commit.
// Every socket must receive every message exactly once, in seq order. The baseline is the same POSTs'
// own HTTP latency.
func fanout() Benchmark {
	return Benchmark{Name: "fanout", Run: runFanout}
}

// fanoutWarmup messages are sent (and checked) before the measured ones: the first message of a chat
// fills the server's caches of its membership.
const fanoutWarmup = 5

// fanoutDrain bounds the wait for the last frames after the last POST was answered.
const fanoutDrain = 30 * time.Second

// socketLog is what one socket received of the group's message frames, in order of receipt. Its
// reader goroutine alone writes it until the socket is closed.
type socketLog struct {
	seqs []int64
	at   []time.Time
	// err is why the socket stopped reading before the harness closed it.
	err error
}

func runFanout(ctx context.Context, env *Env) (Result, error) {
	members := env.FanoutMembers
	srv, users, sessions, client, err := seedAndStart(ctx, env, members)
	if err != nil {
		return Result{}, err
	}
	defer client.CloseIdleConnections()
	ids := make([]uuid.UUID, len(users))
	for i, u := range users {
		ids[i] = u.ID
	}
	sender := sessions[0]
	begin := time.Now()
	group, err := sender.createGroup(ctx, client, srv.BaseURL, "fan-out", ids[1:])
	if err != nil {
		return Result{}, err
	}
	fmt.Fprintf(env.Log, "bench: created a group of %d members in %s\n", members, time.Since(begin).Round(time.Millisecond))

	begin = time.Now()
	conns := make([]*websocket.Conn, members)
	defer func() {
		for _, c := range conns {
			if c != nil {
				c.Close()
			}
		}
	}()
	err = forEach(ctx, members, 16, func(ctx context.Context, i int) error {
		ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		token, err := sessions[i].wsToken(ctx, client, srv.BaseURL)
		if err != nil {
			return err
		}
		conns[i], err = dialWS(ctx, srv.BaseURL, token)
		return err
	})
	if err != nil {
		return Result{}, fmt.Errorf("open sockets: %w", err)
	}
	fmt.Fprintf(env.Log, "bench: opened %d sockets (one per member) in %s\n", members, time.Since(begin).Round(time.Millisecond))

	total := fanoutWarmup + env.FanoutMessages
	logs := make([]socketLog, members)
	var received atomic.Int64
	var readers sync.WaitGroup
	groupID := group.String()
	for i, c := range conns {
		readers.Go(func() { logs[i] = readGroupFrames(c, groupID, total, &received) })
	}
	closeAll := func() {
		for _, c := range conns {
			_ = c.Close()
		}
		readers.Wait()
	}

	fmt.Fprintf(env.Log, "bench: sending %d messages (after %d warm-up ones) one at a time, at most one per %s\n",
		env.FanoutMessages, fanoutWarmup, env.FanoutInterval)
	watch, err := watchForeignWriters(ctx, env)
	if err != nil {
		closeAll()
		return Result{}, err
	}
	sentAt := map[int64]time.Time{}
	var seqs []int64
	var post Latencies
	tick := time.NewTicker(env.FanoutInterval)
	defer tick.Stop()
	for i := range total {
		opCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
		start := time.Now()
		m, err := sender.sendMessage(opCtx, client, srv.BaseURL, group, messageText(0, i), "fan-"+strconv.Itoa(i))
		done := time.Now()
		cancel()
		if err != nil {
			closeAll()
			return Result{}, err
		}
		if _, dup := sentAt[m.Seq]; dup {
			closeAll()
			return Result{}, fmt.Errorf("two sends answered seq %d", m.Seq)
		}
		sentAt[m.Seq] = start
		seqs = append(seqs, m.Seq)
		if i >= fanoutWarmup {
			post.Add(done.Sub(start))
		}
		select {
		case <-ctx.Done():
			closeAll()
			return Result{}, ctx.Err()
		case <-tick.C:
		}
	}

	foreign := watch()
	if foreign.Busy > 0 {
		fmt.Fprintf(env.Log, "bench: WARNING: in %d of %d samples while sending, a write transaction of another database had run for over %s "+
			"(e.g. %s): the log's visibility rule waits for the cluster's oldest such transaction, so those delay delivery here\n",
			foreign.Busy, foreign.Samples, foreignWriterAge, foreign.Example)
	}

	// Diagnostic: whether the chats read model keeps up with the group (sockets do not wait for it).
	behind, err := chatsBehind(ctx, env)
	if err != nil {
		closeAll()
		return Result{}, err
	}

	// Wait for the last frames, then a little longer for duplicates, then stop reading.
	want := int64(members * total)
	deadline := time.Now().Add(fanoutDrain)
	for received.Load() < want && time.Now().Before(deadline) && ctx.Err() == nil {
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(200 * time.Millisecond)
	closeAll()

	// Every socket, every message, once, in order; then the latencies of the measured messages.
	var recv Latencies
	firstPerMessage, lastPerMessage := map[int64]time.Duration{}, map[int64]time.Duration{}
	var errs []error
	for i := range logs {
		l := &logs[i]
		if err := checkDelivery(seqs, l.seqs); err != nil {
			if l.err != nil {
				err = fmt.Errorf("%w (the socket stopped reading: %v)", err, l.err)
			}
			errs = append(errs, fmt.Errorf("socket of member %d: %w", i, err))
			continue
		}
		for j, seq := range l.seqs {
			if j < fanoutWarmup {
				continue
			}
			d := l.at[j].Sub(sentAt[seq])
			recv.Add(d)
			lastPerMessage[seq] = max(lastPerMessage[seq], d)
			if f, ok := firstPerMessage[seq]; !ok || d < f {
				firstPerMessage[seq] = d
			}
		}
	}
	if len(errs) > 0 {
		return Result{}, fmt.Errorf("%d of %d sockets did not receive every message exactly once in order; first: %w",
			len(errs), members, errs[0])
	}
	var first, last Latencies
	for seq, d := range lastPerMessage {
		last.Add(d)
		first.Add(firstPerMessage[seq])
	}
	late := 0
	for _, d := range firstPerMessage {
		if d > 100*time.Millisecond {
			late++
		}
	}
	fmt.Fprintf(env.Log, "bench: %d sockets each received all %d messages once, in order (%d receipts measured); "+
		"%d of %d measured messages reached their first socket after more than 100 ms; slowest: %s\n",
		members, total, recv.Len(), late, len(firstPerMessage), slowest(firstPerMessage, 5))

	return Result{Figures: []Figure{
		{
			Name:     "p50 POST to receipt, " + strconv.Itoa(members) + " sockets",
			Measured: Measure{ms(recv.Percentile(0.50)), "ms"},
			Baseline: &Measure{ms(post.Percentile(0.50)), "ms"},
		},
		{
			Name:     "p99 POST to receipt, " + strconv.Itoa(members) + " sockets",
			Measured: Measure{ms(recv.Percentile(0.99)), "ms"},
			Baseline: &Measure{ms(post.Percentile(0.99)), "ms"},
			Target:   Target{Kind: ValueAtMost, Value: 100},
		},
		{
			// Per message, the time until its first socket had it: about when the fan-out got the
			// event. The rest, up to the last socket, is the fan-out to the sockets.
			Name:     "p99 POST to first socket's receipt",
			Measured: Measure{ms(first.Percentile(0.99)), "ms"},
			Baseline: &Measure{ms(post.Percentile(0.99)), "ms"},
		},
		{
			// Per message, the time until its last socket had it.
			Name:     "p99 POST to last socket's receipt",
			Measured: Measure{ms(last.Percentile(0.99)), "ms"},
			Baseline: &Measure{ms(post.Percentile(0.99)), "ms"},
		},
		{
			Name:     "samples with another database's write transaction open > " + foreignWriterAge.String(),
			Measured: Measure{100 * float64(foreign.Busy) / float64(max(foreign.Samples, 1)), "%"},
		},
		{
			Name:     "chats projection behind after the last send",
			Measured: Measure{float64(behind), "events"},
		},
	}}, nil
}

// readGroupFrames reads c until it fails (the harness closing it ends the loop) and keeps the seq and
// receipt time of every message.sent frame of chat, counting them in received. Other frames (other
// chats, other types) are skipped. A socket that ends before it received want frames records why.
func readGroupFrames(c *websocket.Conn, chat string, want int, received *atomic.Int64) socketLog {
	l := socketLog{seqs: make([]int64, 0, want), at: make([]time.Time, 0, want)}
	for {
		_, b, err := c.ReadMessage()
		at := time.Now()
		if err != nil {
			if len(l.seqs) < want && !errors.Is(err, net.ErrClosed) {
				l.err = err
			}
			return l
		}
		seq, ok, err := messageFrameSeq(b, chat)
		if err != nil {
			l.err = err
			return l
		}
		if ok {
			l.seqs = append(l.seqs, seq)
			l.at = append(l.at, at)
			received.Add(1)
		}
	}
}

// messageFrameSeq returns the seq of a message.sent frame of chat; ok is false for any other frame.
func messageFrameSeq(b []byte, chat string) (seq int64, ok bool, err error) {
	var f struct {
		Type   string `json:"type"`
		ChatID string `json:"chat_id"`
		Data   struct {
			Seq    int64  `json:"seq"`
			ChatID string `json:"chat_id"`
		} `json:"data"`
	}
	if err := json.Unmarshal(b, &f); err != nil {
		return 0, false, fmt.Errorf("undecodable frame %.200q: %w", b, err)
	}
	if f.Type != "message.sent" || f.ChatID != chat {
		return 0, false, nil
	}
	if f.Data.Seq < 1 || f.Data.ChatID != chat {
		return 0, false, fmt.Errorf("message.sent frame without its message: %.300s", b)
	}
	return f.Data.Seq, true, nil
}

// checkDelivery verifies that got (the seqs a socket received, in order) is exactly want (the seqs
// sent, in order): nothing missing, nothing twice, nothing reordered, nothing unexpected.
func checkDelivery(want, got []int64) error {
	for i := range min(len(want), len(got)) {
		if got[i] == want[i] {
			continue
		}
		for j := range i {
			if got[j] == got[i] {
				return fmt.Errorf("seq %d received twice (receipts %d and %d)", got[i], j, i)
			}
		}
		return fmt.Errorf("receipt %d is seq %d, want seq %d", i, got[i], want[i])
	}
	switch {
	case len(got) < len(want):
		return fmt.Errorf("received %d of %d messages; missing seq %d onwards", len(got), len(want), want[len(got)])
	case len(got) > len(want):
		for j := range len(want) {
			if want[j] == got[len(want)] {
				return fmt.Errorf("seq %d received twice (receipts %d and %d)", got[len(want)], j, len(want))
			}
		}
		return fmt.Errorf("received %d messages, %d sent; unexpected seq %d", len(got), len(want), got[len(want)])
	}
	return nil
}

// chatsBehind counts the events the chats projection has yet to apply, on a connection of its own.
func chatsBehind(ctx context.Context, env *Env) (int, error) {
	conn, err := env.Connect(ctx)
	if err != nil {
		return 0, err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	return eventsBehind(ctx, conn, "chats")
}

// slowest describes the n largest durations of byKey as "seq 12: 340ms, ...", largest first.
func slowest(byKey map[int64]time.Duration, n int) string {
	keys := make([]int64, 0, len(byKey))
	for k := range byKey {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b int64) int { return cmp.Or(cmp.Compare(byKey[b], byKey[a]), cmp.Compare(a, b)) })
	parts := make([]string, 0, n)
	for _, k := range keys[:min(n, len(keys))] {
		parts = append(parts, fmt.Sprintf("seq %d: %s", k, byKey[k].Round(100*time.Microsecond)))
	}
	return strings.Join(parts, ", ")
}

// foreignWriterAge is the age from which a write transaction of another database counts as holding
// back the visibility of new events (events after it stay invisible to log readers until it ends).
const foreignWriterAge = 50 * time.Millisecond

// foreignWriters is what watchForeignWriters saw.
type foreignWriters struct {
	Samples, Busy int
	// Example is the query of one such transaction.
	Example string
}

// watchForeignWriters samples pg_stat_activity every 20 ms, until the returned stop is called, for
// transactions of other databases of the cluster that hold a transaction id and have run longer than
// foreignWriterAge: other work on a shared PostgreSQL (a test suite's CREATE DATABASE, say) that
// holds back pg_snapshot_xmin, on which the server's log readers wait. It is a diagnostic of noise.
func watchForeignWriters(ctx context.Context, env *Env) (stop func() foreignWriters, err error) {
	conn, err := env.Connect(ctx)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(ctx)
	var out foreignWriters
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer conn.Close(context.WithoutCancel(ctx))
		t := time.NewTicker(20 * time.Millisecond)
		defer t.Stop()
		for {
			var n int
			var example string
			err := conn.QueryRow(ctx, `SELECT count(*), COALESCE(max(left(query, 80)), '') FROM pg_stat_activity
				WHERE backend_xid IS NOT NULL AND datname IS DISTINCT FROM current_database()
				AND xact_start < now() - $1::interval`, foreignWriterAge.String()).Scan(&n, &example)
			if err == nil {
				out.Samples++
				if n > 0 {
					out.Busy++
					out.Example = example
				}
			}
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
	}()
	return func() foreignWriters {
		cancel()
		<-done
		return out
	}, nil
}
