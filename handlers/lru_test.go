package handlers

import "testing"

func TestLRUKeepsTheMostRecentlyUsed(t *testing.T) {
	t.Parallel()
	c := newLRU[int, string](2)
	c.put(1, "one")
	c.put(2, "two")
	if v, ok := c.get(1); !ok || v != "one" { // 1 is now the most recent
		t.Fatalf("get(1) = %q, %v", v, ok)
	}
	c.put(3, "three") // drops 2, the least recently used
	if _, ok := c.peek(2); ok {
		t.Fatal("2 was kept past the bound")
	}
	c.put(1, "uno")
	if v, _ := c.peek(1); v != "uno" {
		t.Fatalf("peek(1) = %q after put", v)
	}
	c.remove(1)
	if _, ok := c.get(1); ok {
		t.Fatal("1 was kept after remove")
	}
	if v, ok := c.get(3); !ok || v != "three" {
		t.Fatalf("get(3) = %q, %v", v, ok)
	}
	none := newLRU[int, int](0)
	none.put(1, 1)
	if _, ok := none.get(1); ok {
		t.Fatal("a zero-sized cache kept an entry")
	}
}
