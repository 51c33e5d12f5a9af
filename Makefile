# Taki: `make run` serves on 127.0.0.1:8080 (creating and migrating the database first); `make test`
# runs the whole suite with the race detector against the local PostgreSQL.

GO          ?= go
STATICCHECK ?= $(GO) run honnef.co/go/tools/cmd/staticcheck@v0.8.2
# A development-only secret so that `make run` works on a fresh machine. Set your own in production.
export TAKI_SECRET ?= taki-development-secret-do-not-use-in-production

.PHONY: build run test lint bench fuzz

build:
	$(GO) build -o bin/taki ./cmd/taki

run: build
	./bin/taki serve

test:
	$(GO) vet ./...
	$(GO) test -race -count=1 -timeout 20m ./...
	$(MAKE) fuzz FUZZTIME=5s

# Every fuzz target of the decoders, briefly in `make test`, longer on demand: make fuzz FUZZTIME=10m
FUZZTIME ?= 1m
fuzz:
	$(GO) test -run '^$$' -fuzz '^FuzzDecodeJSON$$' -fuzztime $(FUZZTIME) ./infra/http
	$(GO) test -run '^$$' -fuzz '^FuzzDecodeSendMessage$$' -fuzztime $(FUZZTIME) ./infra/http
	$(GO) test -run '^$$' -fuzz '^FuzzDecodeClientFrame$$' -fuzztime $(FUZZTIME) ./infra/ws

lint:
	@unformatted=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$unformatted" ]; then echo "gofmt needed:"; echo "$$unformatted"; exit 1; fi
	$(GO) vet ./...
	$(STATICCHECK) ./...

bench: build
	$(GO) run ./tests/bench
