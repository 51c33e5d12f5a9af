package handlers

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"

	"taki/commands"
	"taki/events"
	"taki/queries"
)

// gatedMessages answers every read with msg; the first read waits until open is closed, after
// closing waiting: a read model that lags.
type gatedMessages struct {
	msg     queries.Message
	waiting chan struct{}
	open    chan struct{}
	reads   atomic.Int32
}

func (g *gatedMessages) Message(ctx context.Context, _, _ uuid.UUID, _ events.Position) (queries.Message, bool, error) {
	if g.reads.Add(1) == 1 {
		close(g.waiting)
		select {
		case <-g.open:
		case <-ctx.Done():
			return queries.Message{}, false, ctx.Err()
		}
	}
	return g.msg, true, nil
}

// An edit or a delete waits for the read model before it takes the chat's lock: while it waits,
// sends to that chat go on, and it then decides on the chat as it is after them.
func TestEditAndDeleteWaitForTheReadModelWithoutHoldingTheChatLock(t *testing.T) {
	t.Parallel()
	for _, name := range []string{"edit", "delete"} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			e := newStoreEnv(t)
			e.store.Forget(e.chat, 3) // the member another instance added: this one knows it too
			ctx := context.Background()
			sent := e.log.streams[e.chat][1].Data.(events.MessageSent)
			msgs := &gatedMessages{waiting: make(chan struct{}), open: make(chan struct{}), msg: queries.Message{
				ID: sent.MessageID, ChatID: e.chat, Seq: sent.Seq, SenderID: sent.SenderID, Text: sent.Text, SentAt: sent.SentAt}}
			cmds, err := NewChatCommands(e.store, e.log, msgs, noTyping{}, time.Now)
			if err != nil {
				t.Fatal(err)
			}
			done := make(chan error, 1)
			go func() {
				var err error
				if name == "edit" {
					_, err = (EditMessageHandler{cmds}).Handle(ctx, commands.EditMessage{Actor: e.ann, ChatID: e.chat,
						MessageID: sent.MessageID, Text: "edited"})
				} else {
					_, err = (DeleteMessageHandler{cmds}).Handle(ctx, commands.DeleteMessage{Actor: e.ann, ChatID: e.chat,
						MessageID: sent.MessageID})
				}
				done <- err
			}()
			select {
			case <-msgs.waiting:
			case <-time.After(10 * time.Second):
				t.Fatal("the command never read the message")
			}

			sendDone := make(chan error, 1)
			go func() {
				_, err := (SendMessageHandler{cmds}).Handle(ctx, commands.SendMessage{Actor: e.bob, ChatID: e.chat,
					Text: "meanwhile", ClientMsgID: "b1"})
				sendDone <- err
			}()
			succeedsWithin(t, sendDone, "a send while the "+name+" waits for the read model")
			close(msgs.open)
			succeedsWithin(t, done, "the "+name)
			evs := e.log.streams[e.chat]
			last := evs[len(evs)-1]
			switch last.Data.(type) {
			case events.MessageEdited, events.MessageDeleted:
			default:
				t.Fatalf("the chat's last event is %s, want the %s after the send", last.Type, name)
			}
			if _, ok := evs[len(evs)-2].Data.(events.MessageSent); !ok {
				t.Fatalf("the event before the %s is %s, want the send", name, evs[len(evs)-2].Type)
			}
		})
	}
}

// succeedsWithin fails t unless done yields nil soon: what ran behind it never came out.
func succeedsWithin(t *testing.T, done <-chan error, what string) {
	t.Helper()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("%s did not finish", what)
	}
}
