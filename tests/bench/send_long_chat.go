package main

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
)

// sendLongChat checks DESIGN.md's "a command's cost must not grow with its stream's length": the same
// env.Clients clients send into one group chat already holding env.LongChatMessages messages and
// into a new group chat with the same members, in the same run. The long chat is built through the
// API (the command path, with its snapshots) by the same clients sending concurrently. Target: about
// 1, >= 0.8x.
func sendLongChat() Benchmark {
	return Benchmark{Name: "send-long-chat", Run: runSendLongChat}
}

func runSendLongChat(ctx context.Context, env *Env) (Result, error) {
	srv, users, sessions, client, err := seedAndStart(ctx, env, env.Clients)
	if err != nil {
		return Result{}, err
	}
	defer client.CloseIdleConnections()
	ids := make([]uuid.UUID, len(users))
	for i, u := range users {
		ids[i] = u.ID
	}
	// Both chats are created first: creating a chat answers it as the read model shows it, and after
	// the build the chats read model may lag by more than the server's consistency wait (503).
	long, err := sessions[0].createGroup(ctx, client, srv.BaseURL, "long chat", ids[1:])
	if err != nil {
		return Result{}, err
	}
	fresh, err := sessions[0].createGroup(ctx, client, srv.BaseURL, "new chat", ids[1:])
	if err != nil {
		return Result{}, err
	}

	// Build the long chat: every client sends as fast as it is answered until the chat holds the
	// wanted number of messages.
	fmt.Fprintf(env.Log, "bench: building a chat of %d messages through POST /messages from %d clients\n", env.LongChatMessages, env.Clients)
	begin := time.Now()
	var claimed, done atomic.Int64
	stopReport := make(chan struct{})
	go func() {
		t := time.NewTicker(10 * time.Second)
		defer t.Stop()
		for {
			select {
			case <-stopReport:
				return
			case <-t.C:
				n := done.Load()
				fmt.Fprintf(env.Log, "bench: long chat at %d of %d messages, %.0f msg/s\n", n, env.LongChatMessages,
					float64(n)/time.Since(begin).Seconds())
			}
		}
	}()
	err = forEach(ctx, env.Clients, env.Clients, func(ctx context.Context, w int) error {
		for {
			i := claimed.Add(1)
			if i > int64(env.LongChatMessages) {
				return nil
			}
			opCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
			_, err := sessions[w].sendMessage(opCtx, client, srv.BaseURL, long, messageText(w, int(i)), "build-"+strconv.FormatInt(i, 10))
			cancel()
			if err != nil {
				return err
			}
			done.Add(1)
		}
	})
	close(stopReport)
	if err != nil {
		return Result{}, fmt.Errorf("build the long chat: %w", err)
	}
	build := time.Since(begin)
	fmt.Fprintf(env.Log, "bench: built the long chat (%d messages) in %s, %.0f msg/s\n", env.LongChatMessages,
		build.Round(time.Millisecond), float64(env.LongChatMessages)/build.Seconds())

	// Measure from a settled state if the chats read model gets there within longChatSettle: sends
	// do not read it, but its catch-up would compete for the CPU with the measured phases (alike in
	// all four of them, given their order).
	conn, err := env.Connect(ctx)
	if err != nil {
		return Result{}, err
	}
	defer func() { conn.Close(context.WithoutCancel(ctx)) }() // conn may be replaced below
	behindAtBuild, err := eventsBehind(ctx, conn, "chats")
	if err != nil {
		return Result{}, err
	}
	last, err := lastPosition(ctx, conn)
	if err != nil {
		return Result{}, err
	}
	behind := 0
	settled := time.Now()
	if _, err := waitGroupAt(ctx, env, conn, srv, "chats", last, longChatSettle); errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil {
		// The timeout interrupted a query: pgx closed that connection.
		conn.Close(context.WithoutCancel(ctx))
		if conn, err = env.Connect(ctx); err != nil {
			return Result{}, err
		}
		if behind, err = eventsBehind(ctx, conn, "chats"); err != nil {
			return Result{}, err
		}
		fmt.Fprintf(env.Log, "bench: WARNING: the chats projection is still %d events behind %s after the build (%d at its end); measuring anyway, with its catch-up competing for the CPU\n",
			behind, longChatSettle, behindAtBuild)
	} else if err != nil {
		return Result{}, err
	} else {
		fmt.Fprintf(env.Log, "bench: the chats projection was %d events behind at the end of the build and caught up %s later\n",
			behindAtBuild, time.Since(settled).Round(time.Millisecond))
	}

	// New, long, long, new, each for half the duration: a drift of the machine's load over the run
	// then weighs on both sides alike.
	sent := map[uuid.UUID]int{long: env.LongChatMessages, fresh: 0}
	var stats [2]LoadStats
	half := max(env.Duration/2, time.Second)
	for _, which := range []int{0, 1, 1, 0} {
		chat := [2]uuid.UUID{fresh, long}[which]
		name := [2]string{"new chat", "long chat"}[which]
		fmt.Fprintf(env.Log, "bench: POST /messages into the %s from %d clients for %s\n", name, env.Clients, half)
		phase := LoadPhase{Workers: env.Clients, Warmup: env.Warmup, Duration: half, OpTimeout: 30 * time.Second}
		perClient := make([]int, env.Clients)
		prefix := "p" + strconv.Itoa(sent[chat]) + "-"
		st, err := phase.Run(ctx, func(ctx context.Context, w, i int) error {
			if _, err := sessions[w].sendMessage(ctx, client, srv.BaseURL, chat, messageText(w, i), prefix+strconv.Itoa(i)); err != nil {
				return err
			}
			perClient[w]++
			return nil
		})
		if err != nil {
			return Result{}, fmt.Errorf("%s: %w", name, err)
		}
		for _, n := range perClient {
			sent[chat] += n
		}
		stats[which] = mergeStats(stats[which], st)
	}

	behindAtEnd, err := eventsBehind(ctx, conn, "chats")
	if err != nil {
		return Result{}, err
	}
	if err := checkMessageLog(ctx, conn, sent); err != nil {
		return Result{}, err
	}
	fmt.Fprintf(env.Log, "bench: the long chat holds %d messages, the new one %d, gapless in the log\n", sent[long], sent[fresh])

	newStats, longStats := stats[0], stats[1]
	return Result{Figures: []Figure{
		{
			Name:     "throughput into the long chat",
			Measured: Measure{longStats.Rate(), "msg/s"},
			Baseline: &Measure{newStats.Rate(), "msg/s"},
			Target:   Target{Kind: RatioAtLeast, Value: 0.8},
		},
		{
			Name:     "p50 latency, long chat",
			Measured: Measure{ms(longStats.Latencies.Percentile(0.50)), "ms"},
			Baseline: &Measure{ms(newStats.Latencies.Percentile(0.50)), "ms"},
		},
		{
			Name:     "p99 latency, long chat",
			Measured: Measure{ms(longStats.Latencies.Percentile(0.99)), "ms"},
			Baseline: &Measure{ms(newStats.Latencies.Percentile(0.99)), "ms"},
		},
		{
			Name:     "long chat build (" + strconv.Itoa(env.LongChatMessages) + " messages)",
			Measured: Measure{build.Seconds(), "s"},
		},
		{
			// How far the chats read model was behind the build's last answered send, and when the
			// measured phases began (0 when it caught up within longChatSettle).
			Name:     "chats projection behind at the end of the build",
			Measured: Measure{float64(behindAtBuild), "events"},
		},
		{
			Name:     "chats projection behind when measuring began",
			Measured: Measure{float64(behind), "events"},
		},
		{
			Name:     "chats projection behind when measuring ended",
			Measured: Measure{float64(behindAtEnd), "events"},
		},
	}}, nil
}

// longChatSettle bounds the wait for the chats read model after the build.
const longChatSettle = time.Minute

// eventsBehind counts the events a consumer group has not committed yet (all of them before its
// first commit).
func eventsBehind(ctx context.Context, conn *pgx.Conn, group string) (int, error) {
	var n int
	err := conn.QueryRow(ctx, `SELECT count(*) FROM events WHERE NOT EXISTS (SELECT 1 FROM events_offsets
			WHERE consumer_group = $1 AND (last_processed_transaction_id, COALESCE(offset_acked, 0)) >= (events.transaction_id, events."offset"))`,
		group).Scan(&n)
	if err != nil {
		return 0, fmt.Errorf("count events after the %s offset: %w", group, err)
	}
	return n, nil
}

// mergeStats adds b's counts, window and latencies to a's.
func mergeStats(a, b LoadStats) LoadStats {
	a.Ops += b.Ops
	a.Window += b.Window
	a.Latencies.Merge(&b.Latencies)
	return a
}
