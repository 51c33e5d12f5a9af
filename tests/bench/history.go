package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"taki/events"
)

// history measures DESIGN.md's "a 50-message page from a chat of 1,000,000 messages, p99 <= 5 ms":
// GET /api/v1/chats/{id}/messages?before_seq=N&limit=50 at random positions, one request at a time
// over HTTP. The chat is built by the fastest honest route: chat.created and env.HistoryMessages
// message.sent events appended to the log in large transactions (as eventgen.go writes the users'
// log), then applied by a freshly started server's chats projection, whose catch-up is timed.
//
// The baseline is as many GET /api/v1/users/me by the same session, interleaved with the pages: the
// cheapest authenticated read (session, bus, one primary-key lookup, a small JSON answer), so the ratio
// is what the page itself costs over the HTTP stack they share; a raw SQL read would leave that stack
// out and make the ratio say more about HTTP than about history paging.
func history() Benchmark {
	return Benchmark{Name: "history", Run: runHistory}
}

const (
	historyPage  = 50
	historyChunk = 10_000
	// historyWarmup requests of each kind are made, uncounted, before the measured ones.
	historyWarmup = 100
)

func runHistory(ctx context.Context, env *Env) (Result, error) {
	conn, err := env.Connect(ctx)
	if err != nil {
		return Result{}, err
	}
	defer conn.Close(context.WithoutCancel(ctx))

	users, err := seedUsers(ctx, conn, 2)
	if err != nil {
		return Result{}, err
	}
	n := env.HistoryMessages
	fmt.Fprintf(env.Log, "bench: appending a chat of %d messages to the log, %d events per transaction\n", n, historyChunk)
	begin := time.Now()
	chat, err := appendChatLog(ctx, conn, users, n, historyChunk)
	if err != nil {
		return Result{}, err
	}
	if _, err := conn.Exec(ctx, `VACUUM (ANALYZE) events`); err != nil {
		return Result{}, fmt.Errorf("vacuum events: %w", err)
	}
	written := time.Since(begin)
	last, err := lastPosition(ctx, conn)
	if err != nil {
		return Result{}, err
	}
	fmt.Fprintf(env.Log, "bench: wrote and vacuumed %d events in %s\n", n+1, written.Round(time.Millisecond))

	// The server, this far behind, catches up by the batched path before its subscriber starts.
	srv, err := env.StartServer(ctx)
	if err != nil {
		return Result{}, err
	}
	caught, err := waitGroupAt(ctx, env, conn, srv, "chats", last, env.CatchUpTimeout)
	if err != nil {
		return Result{}, err
	}
	catchUp := caught.Sub(srv.Started)
	fmt.Fprintf(env.Log, "bench: the chats projection applied them %s after the server started (%.0f events/s)\n",
		catchUp.Round(time.Millisecond), float64(n+1)/catchUp.Seconds())
	if _, err := srv.WaitReady(ctx); err != nil {
		return Result{}, err
	}
	if _, err := waitGroupAt(ctx, env, conn, srv, "users", last, env.CatchUpTimeout); err != nil {
		return Result{}, err
	}

	client := newHTTPClient(1)
	defer client.CloseIdleConnections()
	s, err := logIn(ctx, client, srv.BaseURL, users[0].Email, seedPassword)
	if err != nil {
		return Result{}, err
	}
	// The newest page first: the read model must hold the whole chat.
	latest, err := s.listMessages(ctx, client, srv.BaseURL, chat, url.Values{"limit": {strconv.Itoa(historyPage)}})
	if err != nil {
		return Result{}, err
	}
	if err := checkPage(latest, chat, int64(n)+1, historyPage); err != nil {
		return Result{}, fmt.Errorf("latest page: %w", err)
	}

	fmt.Fprintf(env.Log, "bench: %d pages of %d at random positions, interleaved with as many GET /users/me\n", env.HistoryRequests, historyPage)
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 1))
	var pages, me Latencies
	for i := range historyWarmup + env.HistoryRequests {
		// before_seq from limit+1 to n+1: every page is full.
		before := int64(historyPage+1) + rng.Int64N(int64(max(n-historyPage+1, 1)))
		d, err := timePage(ctx, client, srv.BaseURL, s, chat, before)
		if err != nil {
			return Result{}, err
		}
		d2, err := timeMe(ctx, client, srv.BaseURL, s)
		if err != nil {
			return Result{}, err
		}
		if i >= historyWarmup {
			pages.Add(d)
			me.Add(d2)
		}
	}

	return Result{Figures: []Figure{
		{
			Name:     "p50 page of " + strconv.Itoa(historyPage) + " from " + strconv.Itoa(n) + " messages",
			Measured: Measure{ms(pages.Percentile(0.50)), "ms"},
			Baseline: &Measure{ms(me.Percentile(0.50)), "ms"},
		},
		{
			Name:     "p99 page of " + strconv.Itoa(historyPage) + " from " + strconv.Itoa(n) + " messages",
			Measured: Measure{ms(pages.Percentile(0.99)), "ms"},
			Baseline: &Measure{ms(me.Percentile(0.99)), "ms"},
			Target:   Target{Kind: ValueAtMost, Value: 5},
		},
		{
			Name:     "log append of the chat (set-up)",
			Measured: Measure{written.Seconds(), "s"},
		},
		{
			Name:     "chats projection catch-up, from process start",
			Measured: Measure{float64(n+1) / catchUp.Seconds(), "events/s"},
		},
	}}, nil
}

func timePage(ctx context.Context, client *http.Client, baseURL string, s *session, chat uuid.UUID, before int64) (time.Duration, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	q := url.Values{"before_seq": {strconv.FormatInt(before, 10)}, "limit": {strconv.Itoa(historyPage)}}
	start := time.Now()
	p, err := s.listMessages(ctx, client, baseURL, chat, q)
	d := time.Since(start)
	if err != nil {
		return 0, err
	}
	return d, checkPage(p, chat, before, historyPage)
}

func timeMe(ctx context.Context, client *http.Client, baseURL string, s *session) (time.Duration, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	start := time.Now()
	_, err := s.call(ctx, client, http.MethodGet, baseURL, "/api/v1/users/me", nil, http.StatusOK)
	return time.Since(start), err
}

// appendChatLog appends a group chat of users (the first its admin) and n messages, sent by the
// users in turn a second apart, in transactions of chunk events. It returns the chat's id.
func appendChatLog(ctx context.Context, conn *pgx.Conn, users []benchUser, n, chunk int) (uuid.UUID, error) {
	chat, err := uuid.NewV7()
	if err != nil {
		return uuid.Nil, err
	}
	at := time.Now().UTC().Add(-time.Duration(n+1) * time.Second).Truncate(time.Microsecond)
	members := make([]events.ChatMember, len(users))
	for i, u := range users {
		members[i] = events.ChatMember{UserID: u.ID, Role: events.ChatRoleMember}
	}
	members[0].Role = events.ChatRoleAdmin
	rows := []logRow{{StreamID: chat, StreamType: events.StreamChat, Version: 1, OccurredAt: at, Actor: users[0].ID,
		Data: events.ChatCreated{ChatID: chat, Type: events.ChatGroup, Title: "history", CreatedBy: users[0].ID,
			Members: members, CreatedAt: at}}}
	for seq := int64(1); seq <= int64(n); seq++ {
		sender := users[int(seq)%len(users)].ID
		sentAt := at.Add(time.Duration(seq) * time.Second)
		clientID := "h-" + strconv.FormatInt(seq, 10)
		rows = append(rows, logRow{StreamID: chat, StreamType: events.StreamChat, Version: seq + 1, OccurredAt: sentAt, Actor: sender,
			Data: events.MessageSent{ChatID: chat, MessageID: uuid.NewSHA1(chat, []byte(clientID)), Seq: seq, SenderID: sender,
				Text: messageText(int(seq)%len(users), int(seq)), Format: events.MessageFormatPlain, ClientMsgID: clientID, SentAt: sentAt}})
		if len(rows) == chunk || seq == int64(n) {
			if err := pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error { return appendLogRows(ctx, tx, rows) }); err != nil {
				return uuid.Nil, err
			}
			rows = rows[:0]
		}
	}
	if len(rows) > 0 { // n == 0
		if err := pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error { return appendLogRows(ctx, tx, rows) }); err != nil {
			return uuid.Nil, err
		}
	}
	return chat, nil
}
