package main

import (
	"regexp"
	"strings"
)

const (
	ansiBold  = "\x1b[1m"
	ansiDim   = "\x1b[2m"
	ansiRed   = "\x1b[31m"
	ansiGreen = "\x1b[32m"
	ansiYel   = "\x1b[33m"
	ansiCyan  = "\x1b[36m"
	ansiReset = "\x1b[0m"
)

func (a *app) paint(code, s string) string {
	if !a.color {
		return s
	}
	return code + s + ansiReset
}

func (a *app) bold(s string) string { return a.paint(ansiBold, s) }

var (
	mdBold = regexp.MustCompile(`\*\*([^*]+)\*\*`)
	mdCode = regexp.MustCompile("`([^`]+)`")
)

// renderMarkdown renders the small Markdown subset briefings and hints
// use (headings, bold, code spans, lists, fenced blocks) for a terminal.
// Without colour the markup characters are removed, the text kept.
func renderMarkdown(md string, color bool) string {
	var b strings.Builder
	inFence := false
	for _, line := range strings.Split(strings.TrimRight(md, "\n"), "\n") {
		trimmed := strings.TrimSpace(line)
		if strings.HasPrefix(trimmed, "```") {
			inFence = !inFence
			continue
		}
		if inFence {
			if color {
				line = ansiCyan + line + ansiReset
			}
			b.WriteString("    " + line + "\n")
			continue
		}
		if strings.HasPrefix(trimmed, "#") {
			title := strings.TrimSpace(strings.TrimLeft(trimmed, "#"))
			if color {
				title = ansiBold + title + ansiReset
			} else {
				title = strings.ToUpper(title)
			}
			b.WriteString(title + "\n")
			continue
		}
		line = mdBold.ReplaceAllStringFunc(line, func(m string) string {
			inner := mdBold.FindStringSubmatch(m)[1]
			if color {
				return ansiBold + inner + ansiReset
			}
			return inner
		})
		line = mdCode.ReplaceAllStringFunc(line, func(m string) string {
			inner := mdCode.FindStringSubmatch(m)[1]
			if color {
				return ansiCyan + inner + ansiReset
			}
			return inner
		})
		b.WriteString(line + "\n")
	}
	return b.String()
}

// wrap folds text at width columns on spaces.
func wrap(s string, width int) string {
	var b strings.Builder
	col := 0
	for _, w := range strings.Fields(s) {
		if col > 0 && col+1+len(w) > width {
			b.WriteString("\n")
			col = 0
		} else if col > 0 {
			b.WriteString(" ")
			col++
		}
		b.WriteString(w)
		col += len(w)
	}
	return b.String()
}
