package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"

	"taki/commands"
	"taki/handlers"
	"taki/infra/auth"
	"taki/infra/bus"
	"taki/infra/postgres"
	"taki/infra/server"
	"taki/queries"
)

// seedPasswordConfig is the argon2id cost of demo accounts: 1 MiB and one pass instead of the
// production 19 MiB and two, so registering thousands of users takes seconds. Logging in checks a
// hash at the cost it was made with, so these accounts work on any server.
var seedPasswordConfig = auth.PasswordConfig{MemoryKiB: 1024, Iterations: 1, Parallelism: 1}

// seedOptions are seed's flags.
type seedOptions struct {
	users, chats, messages int
	groupSize, workers     int
	password               string
}

func (o seedOptions) validate() error {
	switch {
	case o.users < 1:
		return usageError("--users", fmt.Sprintf("must be at least 1, got %d", o.users))
	case o.chats < 0:
		return usageError("--chats", fmt.Sprintf("must not be negative, got %d", o.chats))
	case o.messages < 0:
		return usageError("--messages", fmt.Sprintf("must not be negative, got %d", o.messages))
	case o.messages > 0 && o.chats == 0:
		return usageError("--messages", "messages need chats to go to: pass --chats 1 or more")
	case o.groupSize < 1 || o.groupSize > commands.MaxInitialMembers+1:
		return usageError("--group-size", fmt.Sprintf("must be between 1 and %d, got %d", commands.MaxInitialMembers+1, o.groupSize))
	case o.workers < 1 || o.workers > 1024:
		return usageError("--workers", fmt.Sprintf("must be between 1 and 1024, got %d", o.workers))
	}
	if _, err := commands.NewPassword(o.password); err != nil {
		return usageError("--password", err.Error())
	}
	return nil
}

func newSeedCmd(env *environment) *cobra.Command {
	o := seedOptions{users: 100, chats: 20, messages: 1000, groupSize: 5, workers: 32, password: "taki-demo-password"}
	cmd := &cobra.Command{
		Use:   "seed",
		Short: "Fill the (migrated) database with demo users, chats and messages sent through the command bus",
		Long: `Seed registers demo users, creates group and direct chats among them and sends messages spread
over those chats, every one a command on the bus: the log holds real events with real seqs, and the
projections (of this database's running servers, woken as the events are appended) build the read models.

Each run picks a fresh run tag, so emails are demo-TAG-000001@example.com and up and running seed again
adds another set beside the first. Every demo user has the same password (--password), printed at the
end. Demo passwords are hashed with a cheap argon2id cost (1 MiB, 1 iteration instead of 19 MiB, 2) so
that seeding is fast: these are demo accounts, not to be used for real people.

About a quarter of the chats are direct chats between two users, the rest groups of --group-size members.
Messages go round-robin over the chats, each sent by one of the chat's members in turn.`,
		Args: func(_ *cobra.Command, args []string) error {
			if len(args) != 0 {
				return usageError(args[0], "seed takes no arguments, only flags (--users N --chats N --messages N)")
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := o.validate(); err != nil {
				return err
			}
			return seed(cmd.Context(), env, o, cmd.OutOrStdout(), cmd.ErrOrStderr())
		},
	}
	// A flag that does not parse (--users many) is a usage error too: one line, exit 2.
	cmd.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError("seed", err.Error()) })
	f := cmd.Flags()
	f.IntVar(&o.users, "users", o.users, "demo users to register")
	f.IntVar(&o.chats, "chats", o.chats, "chats to create (about a quarter direct, the rest groups)")
	f.IntVar(&o.messages, "messages", o.messages, "messages to send, spread over the chats")
	f.IntVar(&o.groupSize, "group-size", o.groupSize, "members of each group chat, its creator included")
	f.IntVar(&o.workers, "workers", o.workers, "commands sent concurrently")
	f.StringVar(&o.password, "password", o.password, "password of every demo user (hashed at a cheap demo cost)")
	return cmd
}

// seedChat is a chat seed created and the members that send to it.
type seedChat struct {
	id      uuid.UUID
	members []uuid.UUID
}

// seedResult counts what a run created.
type seedResult struct {
	run                    string
	users, groups, directs int
	messages               int
	messagesTook           time.Duration
}

func seed(ctx context.Context, env *environment, o seedOptions, out, errOut io.Writer) error {
	cfg, err := env.config()
	if err != nil {
		return err
	}
	if err := refusePendingMigrations(ctx, env); err != nil {
		return err
	}
	// Every worker holds a connection while it appends; keep some for loads and notifications.
	cfg.DatabaseMaxConns = max(cfg.DatabaseMaxConns, o.workers+8)
	srv, err := server.New(ctx, cfg, env.logger(cfg, nil), server.Options{PasswordConfig: seedPasswordConfig})
	if err != nil {
		return err
	}
	defer srv.Close()

	start := time.Now()
	res, err := seedWith(ctx, srv, o, errOut)
	if err != nil {
		return err
	}
	elapsed := time.Since(start)
	rate := float64(res.messages) / max(res.messagesTook.Seconds(), 1e-9)
	fmt.Fprintf(out, "seeded run %s in %s: %d users, %d chats (%d groups, %d direct), %d messages (%.0f messages/s)\n",
		res.run, elapsed.Round(time.Millisecond), res.users, res.groups+res.directs, res.groups, res.directs, res.messages, rate)
	fmt.Fprintf(out, "users: %s ... %s\n", seedEmail(res.run, 1), seedEmail(res.run, res.users))
	fmt.Fprintf(out, "password of every demo user: %s\n", o.password)
	return nil
}

// refusePendingMigrations fails when the schema is behind the binary, before anything is appended.
func refusePendingMigrations(ctx context.Context, env *environment) error {
	cfg, err := env.config()
	if err != nil {
		return err
	}
	pool, err := env.pool(ctx, cfg)
	if err != nil {
		return err
	}
	defer pool.Close()
	m, err := postgres.NewMigrator(pool)
	if err != nil {
		return err
	}
	defer m.Close()
	pending, err := m.Pending(ctx)
	if err != nil {
		return err
	}
	if pending {
		return errors.New("migrations pending: run `taki migrate up` first")
	}
	return nil
}

func seedEmail(run string, i int) string { return fmt.Sprintf("demo-%s-%06d@example.com", run, i) }

func newRunTag() string {
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// seedWith runs the three phases on srv: users, then chats among them, then messages in the chats.
func seedWith(ctx context.Context, srv *server.Server, o seedOptions, errOut io.Writer) (seedResult, error) {
	res := seedResult{run: newRunTag()}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	// Users.
	userIDs := make([]uuid.UUID, o.users)
	for i := range userIDs {
		userIDs[i] = uuid.New()
	}
	_, err := seedPhase(ctx, srv, "users", o.users, o.workers, errOut, func(ctx context.Context, i int) error {
		_, _, err := bus.Send[queries.User](ctx, srv.Bus, commands.RegisterUser{
			UserID: userIDs[i], Email: seedEmail(res.run, i+1), Password: o.password,
			DisplayName: seedDisplayName(i),
		})
		if err != nil {
			return fmt.Errorf("register %s: %w", seedEmail(res.run, i+1), err)
		}
		return nil
	})
	if err != nil {
		return res, err
	}
	res.users = o.users

	// Chats: direct ones between distinct pairs, the rest groups.
	directs := 0
	if o.users >= 2 {
		directs = min(o.chats/4, o.users*((o.users-1)/2))
	}
	chats := make([]seedChat, o.chats)
	for i := range chats {
		if i < directs {
			// Pairs {a, a+d} with 1 <= d < users/2 are all distinct.
			a, d := i%o.users, 1+i/o.users
			pair := []uuid.UUID{userIDs[a], userIDs[(a+d)%o.users]}
			chats[i] = seedChat{id: handlers.DirectChatID(pair[0], pair[1]), members: pair}
			continue
		}
		size := min(o.groupSize, o.users)
		members := make([]uuid.UUID, size)
		for k := range members {
			members[k] = userIDs[(i*size+k)%o.users]
		}
		chats[i] = seedChat{id: uuid.New(), members: members}
	}
	_, err = seedPhase(ctx, srv, "chats", o.chats, o.workers, errOut, func(ctx context.Context, i int) error {
		c := chats[i]
		var err error
		if i < directs {
			_, _, err = bus.Send[handlers.ChatRef](ctx, srv.Bus, commands.CreateDirectChat{Actor: c.members[0], MemberID: c.members[1]})
		} else {
			_, _, err = bus.Send[handlers.ChatRef](ctx, srv.Bus, commands.CreateGroupChat{
				Actor: c.members[0], ChatID: c.id, Title: seedTitle(i), MemberIDs: c.members[1:],
			})
		}
		if err != nil {
			return fmt.Errorf("create chat %d: %w", i+1, err)
		}
		return nil
	})
	if err != nil {
		return res, err
	}
	res.directs, res.groups = directs, o.chats-directs

	// Messages, round-robin over the chats; each chat's members take turns.
	took, err := seedPhase(ctx, srv, "messages", o.messages, o.workers, errOut, func(ctx context.Context, j int) error {
		c := chats[j%len(chats)]
		turn := j / len(chats)
		_, _, err := bus.Send[handlers.SentMessage](ctx, srv.Bus, commands.SendMessage{
			Actor: c.members[turn%len(c.members)], ChatID: c.id, Text: seedText(j),
			ClientMsgID: fmt.Sprintf("seed-%s-%d", res.run, j+1),
		})
		if err != nil {
			return fmt.Errorf("send message %d: %w", j+1, err)
		}
		return nil
	})
	if err != nil {
		return res, err
	}
	res.messages, res.messagesTook = o.messages, took
	return res, nil
}

// seedPhase runs do(0..n-1) on workers goroutines, showing progress, and stops at the first error.
// Running servers are woken as the events come rather than at their next poll.
func seedPhase(ctx context.Context, srv *server.Server, what string, n, workers int, errOut io.Writer,
	do func(ctx context.Context, i int) error) (time.Duration, error) {
	start := time.Now()
	if n == 0 {
		return 0, nil
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		next, done atomic.Int64
		wg         sync.WaitGroup
		errOnce    sync.Once
		firstErr   error
	)
	fail := func(err error) {
		errOnce.Do(func() { firstErr = err; cancel() })
	}
	for range min(workers, n) {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= n || ctx.Err() != nil {
					return
				}
				if err := do(ctx, i); err != nil {
					fail(err)
					return
				}
				done.Add(1)
			}
		})
	}
	finished := make(chan struct{})
	go func() { wg.Wait(); close(finished) }()

	progress := newSeedProgress(errOut, what, int64(n))
	tick := time.NewTicker(progress.every)
	defer tick.Stop()
	announced := time.Now()
loop:
	for {
		select {
		case <-finished:
			break loop
		case <-tick.C:
			progress.update(done.Load())
			if time.Since(announced) >= time.Second {
				_ = postgres.AnnounceNow(ctx, srv.Pool)
				announced = time.Now()
			}
		}
	}
	if firstErr == nil && ctx.Err() != nil {
		firstErr = ctx.Err()
	}
	if firstErr != nil {
		return 0, firstErr
	}
	took := time.Since(start)
	progress.finish(done.Load())
	return took, postgres.AnnounceNow(ctx, srv.Pool)
}

// seedProgress shows a bar with the rate and ETA on a terminal, a plain line every second otherwise.
type seedProgress struct {
	w     io.Writer
	what  string
	total int64
	bar   *progressbar.ProgressBar
	every time.Duration
	start time.Time
}

func newSeedProgress(w io.Writer, what string, total int64) *seedProgress {
	p := &seedProgress{w: w, what: what, total: total, every: time.Second, start: time.Now()}
	if isTerminal(w) {
		p.every = 100 * time.Millisecond
		p.bar = progressbar.NewOptions64(total,
			progressbar.OptionSetWriter(w),
			progressbar.OptionSetDescription("seed "+what),
			progressbar.OptionShowCount(),
			progressbar.OptionShowIts(),
			progressbar.OptionSetItsString(what),
			progressbar.OptionSetPredictTime(true),
			progressbar.OptionThrottle(100*time.Millisecond),
			progressbar.OptionFullWidth(),
			progressbar.OptionOnCompletion(func() { fmt.Fprintln(w) }),
		)
	}
	return p
}

func (p *seedProgress) update(done int64) {
	if p.bar != nil {
		_ = p.bar.Set64(done)
		return
	}
	p.line(done)
}

func (p *seedProgress) line(done int64) {
	rate := float64(done) / max(time.Since(p.start).Seconds(), 1e-9)
	line := fmt.Sprintf("seed %s: %d/%d, %.0f %s/s", p.what, done, p.total, rate, p.what)
	if rate > 0 && done < p.total {
		line += ", ETA " + time.Duration(float64(p.total-done)/rate*float64(time.Second)).Round(time.Second).String()
	}
	fmt.Fprintln(p.w, line)
}

func (p *seedProgress) finish(done int64) {
	if p.bar != nil {
		_ = p.bar.Set64(done)
		_ = p.bar.Finish()
		return
	}
	p.line(done)
}

var (
	seedFirstNames = []string{"Ada", "Alan", "Barbara", "Edsger", "Grace", "Ken", "Leslie", "Linus", "Margaret", "Rob", "Dennis", "Donald", "Frances", "John", "Radia", "Niklaus"}
	seedLastNames  = []string{"Lovelace", "Turing", "Liskov", "Dijkstra", "Hopper", "Thompson", "Lamport", "Torvalds", "Hamilton", "Pike", "Knuth", "Allen", "Backus", "Perlman", "Wirth", "Ritchie"}
	seedTopics     = []string{"Launch", "Design review", "Book club", "Weekend hike", "Release train", "Coffee", "On-call", "Football", "Recipes", "Travel"}
	seedPhrases    = []string{
		"Good morning everyone!", "Did anyone see the latest build?", "Lunch at noon?", "I'll take a look this afternoon.",
		"Sounds good to me 👍", "Can we move the meeting to Thursday?", "Here's the doc I mentioned.", "Thanks, that fixed it.",
		"Who's joining tonight?", "Running five minutes late, sorry.", "Let's ship it.", "Any news on the release?",
	}
)

func seedDisplayName(i int) string {
	return fmt.Sprintf("%s %s %d", seedFirstNames[i%len(seedFirstNames)], seedLastNames[(i/len(seedFirstNames))%len(seedLastNames)], i+1)
}

func seedTitle(i int) string { return fmt.Sprintf("%s #%d", seedTopics[i%len(seedTopics)], i+1) }

func seedText(j int) string { return fmt.Sprintf("%s (%d)", seedPhrases[j%len(seedPhrases)], j+1) }
