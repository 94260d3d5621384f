package main

import (
	"strings"
	"testing"
	"time"
)

func TestSummarize(t *testing.T) {
	var d []time.Duration
	for i := 20; i >= 1; i-- { // unsorted on purpose
		d = append(d, time.Duration(i)*time.Millisecond)
	}
	s := summarize(d)
	if s.Runs != 20 || s.MedianMS != 10 || s.P95MS != 19 || s.MinMS != 1 || s.MaxMS != 20 {
		t.Fatalf("got %+v", s)
	}
	if one := summarize([]time.Duration{3 * time.Millisecond}); one.MedianMS != 3 || one.P95MS != 3 {
		t.Fatalf("one sample: %+v", one)
	}
	if empty := summarize(nil); empty.Runs != 0 || empty.MedianMS != 0 {
		t.Fatalf("no samples: %+v", empty)
	}
}

func TestRatioAndTable(t *testing.T) {
	if r := ratio(3, 2); r != 1.5 {
		t.Fatalf("ratio(3,2) = %v", r)
	}
	if r := ratio(1, 0); r != 0 {
		t.Fatalf("ratio(1,0) = %v", r)
	}
	if got := fmtRatio(2); got != "**2.00×**" {
		t.Fatalf("fmtRatio(2) = %q", got)
	}
	got := table([]string{"a", "b"}, [][]string{{"1", "2"}})
	want := "| a | b |\n| --- | --- |\n| 1 | 2 |\n"
	if got != want {
		t.Fatalf("table:\n%s\nwant:\n%s", got, want)
	}
	if !strings.Contains(table([]string{"x"}, nil), "| --- |") {
		t.Fatal("header separator missing")
	}
}
