package main

import (
	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

func cmpSort(less func(a, b string) bool) cmp.Option { return cmpopts.SortSlices(less) }
