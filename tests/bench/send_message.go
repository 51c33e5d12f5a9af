package main

import (
	"context"
	"fmt"
	"strconv"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
)

// sendMessage measures the command path of a chat: POST /api/v1/chats/{id}/messages over HTTP from
// env.Clients clients, each sending into a direct chat of its own (with a partner of its own who
// never sends), so that clients do not queue on one chat's lock; against the raw single-row INSERT
// commits of command-throughput's baseline at the same concurrency. DESIGN.md: >= 0.6x first.
func sendMessageBench() Benchmark {
	return Benchmark{Name: "send-message", Run: runSendMessage}
}

func runSendMessage(ctx context.Context, env *Env) (Result, error) {
	// Baseline first, while no server is running, so that it gets the machine to itself.
	phase, base, err := commitBaseline(ctx, env)
	if err != nil {
		return Result{}, err
	}

	// Users 2w (the sender) and 2w+1 (its partner) share direct chat w.
	srv, users, sessions, client, err := seedAndStart(ctx, env, 2*env.Clients)
	if err != nil {
		return Result{}, err
	}
	defer client.CloseIdleConnections()
	chats := make([]uuid.UUID, env.Clients)
	for w := range chats {
		if chats[w], err = sessions[2*w].createDirectChat(ctx, client, srv.BaseURL, users[2*w+1].ID); err != nil {
			return Result{}, err
		}
	}

	fmt.Fprintf(env.Log, "bench: POST /api/v1/chats/{id}/messages from %d clients, one direct chat each, for %s\n", env.Clients, env.Duration)
	sent := make([]int, env.Clients) // every 201, warm-up included, per client
	cpuBefore, err := srv.CPUTime()
	if err != nil {
		return Result{}, err
	}
	phase.ServerPID = srv.PID()
	taki, err := phase.Run(ctx, func(ctx context.Context, w, i int) error {
		if _, err := sessions[2*w].sendMessage(ctx, client, srv.BaseURL, chats[w], messageText(w, i), "m-"+strconv.Itoa(i)); err != nil {
			return err
		}
		sent[w]++
		return nil
	})
	if err != nil {
		return Result{}, err
	}
	cpuAfter, err := srv.CPUTime()
	if err != nil {
		return Result{}, err
	}
	want := map[uuid.UUID]int{}
	acked := 0
	for w, n := range sent {
		want[chats[w]] = n
		acked += n
	}
	conn, err := env.Connect(ctx)
	if err != nil {
		return Result{}, err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if err := checkMessageLog(ctx, conn, want); err != nil {
		return Result{}, err
	}
	fmt.Fprintf(env.Log, "bench: %d acknowledged sends, as many message.sent events with gapless seqs\n", acked)

	return Result{Figures: againstCommits(taki, base, "msg/s", "server CPU per message",
		ms(cpuAfter-cpuBefore)/float64(max(acked, 1)))}, nil
}

// checkMessageLog verifies that every chat in want holds exactly want[chat] message.sent events with
// seqs 1..want[chat], each once: a fast send path that loses, doubles or renumbers messages would
// make its figures meaningless. Chats not in want are not looked at.
func checkMessageLog(ctx context.Context, conn *pgx.Conn, want map[uuid.UUID]int) error {
	ids := make([]uuid.UUID, 0, len(want))
	for id := range want {
		ids = append(ids, id)
	}
	rows, err := conn.Query(ctx, `SELECT stream_id, count(*), count(DISTINCT (payload->>'seq')::bigint),
			COALESCE(min((payload->>'seq')::bigint), 0), COALESCE(max((payload->>'seq')::bigint), 0)
		FROM events WHERE event_type = 'message.sent' AND stream_id = ANY($1) GROUP BY stream_id`, ids)
	if err != nil {
		return fmt.Errorf("count message events: %w", err)
	}
	got := map[uuid.UUID][4]int64{}
	for rows.Next() {
		var id uuid.UUID
		var c [4]int64
		if err := rows.Scan(&id, &c[0], &c[1], &c[2], &c[3]); err != nil {
			return fmt.Errorf("count message events: %w", err)
		}
		got[id] = c
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("count message events: %w", err)
	}
	return compareMessageCounts(want, got)
}

// compareMessageCounts judges, per chat, (events, distinct seqs, min seq, max seq) against the
// number of acknowledged sends.
func compareMessageCounts(want map[uuid.UUID]int, got map[uuid.UUID][4]int64) error {
	for id, n := range want {
		c := got[id]
		w := int64(n)
		if n == 0 && c == [4]int64{} {
			continue
		}
		if c[0] != w || c[1] != w || c[2] != 1 || c[3] != w {
			return fmt.Errorf("chat %s: %d sends answered 201, but the log holds %d message.sent events with %d distinct seqs from %d to %d",
				id, n, c[0], c[1], c[2], c[3])
		}
	}
	return nil
}
