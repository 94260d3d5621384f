package vm

import "strings"

// Quote returns s as one word for a POSIX shell: single-quoted, each
// single quote in it written as close quote, escaped quote, reopen quote:
//
//	it's  ->  'it'\''s'
//
// Nothing inside single quotes is special, so no value of s can run
// anything.
func Quote(s string) string {
	if s != "" && strings.Trim(s, safeChars) == "" {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// safeChars never need quoting (no "=": a bare first word a=b would be an
// assignment, not a command); keeping such words bare only makes the
// remote command readable in logs and `ps`.
const safeChars = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_./:,+@%"

// Join quotes every element of argv and joins them with spaces: the remote
// shell of `vagrant ssh -c` splits the result back into exactly argv.
func Join(argv []string) string {
	q := make([]string, len(argv))
	for i, a := range argv {
		q[i] = Quote(a)
	}
	return strings.Join(q, " ")
}
