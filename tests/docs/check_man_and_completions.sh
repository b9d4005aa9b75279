#!/usr/bin/env bash
# The man pages and the shell completions against the binary's --help.
#
#   check_man_and_completions.sh KIDREAPER MANDIR
#
# KIDREAPER is the kidreaper binary, MANDIR the directory holding the generated
# kidreaper.8 and kidreaper.toml.5. It checks that
#   - both pages render with `MANWIDTH=80 man --warnings -l` with nothing on stderr;
#   - every flag of every --help (the top level, check, diagnose, reap) is documented in
#     kidreaper(8), as a term of its command's section (or of GLOBAL OPTIONS), with a
#     value name exactly when --help shows the flag taking a value;
#   - every flag is in the bash and in the zsh completion;
#   - both completion files parse (bash -n, zsh -n), and the bash completion, loaded
#     after bash-completion, offers each command's flags (`kidreaper reap --met` gives
#     --metric, among others).
# It prints one line per problem and exits 0 only when there is none.
set -u

if [[ $# -ne 2 ]]; then
    echo "usage: $0 KIDREAPER MANDIR" >&2
    exit 2
fi
kidreaper=$1
mandir=$2
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
source_dir=$(cd "$here/../.." && pwd)
bash_completion=$source_dir/contrib/completions/kidreaper.bash
zsh_completion=$source_dir/contrib/completions/_kidreaper
page8=$mandir/kidreaper.8
page5=$mandir/kidreaper.toml.5

problems=0
problem() {
    echo "FAIL: $*"
    problems=$((problems + 1))
}

for file in "$kidreaper" "$page8" "$page5" "$bash_completion" "$zsh_completion"; do
    [[ -r $file ]] || problem "$file: missing or unreadable"
done
[[ -x $kidreaper ]] || problem "$kidreaper: not executable"
if ((problems)); then
    echo "$problems problem(s)"
    exit 1
fi

# (a) The pages render without warnings. C.UTF-8 always exists: an unset or missing locale
# of the caller must not read as a warning of the page.
for page in "$page8" "$page5"; do
    if ! err=$(LC_ALL=C.UTF-8 MANWIDTH=80 man --warnings -l "$page" 2>&1 >/dev/null); then
        problem "$(basename "$page"): man exited non-zero"
    fi
    if [[ -n $err ]]; then
        while IFS= read -r line; do
            problem "$(basename "$page"): man: $line"
        done <<<"$err"
    fi
done

# The flags of one --help: "FLAG VALUE" per option line, VALUE "-" for a switch.
# CLI11 prints an option as `  -h,--help  text` or `  --limit TEXT  text`.
help_flags() {
    "$kidreaper" "$@" --help 2>&1 | awk '
        /^Options:/ { in_options = 1; next }
        /^[A-Za-z]/ { in_options = 0 }
        in_options && /^  +-/ {
            # The name column ends at the first run of two spaces.
            line = $0
            sub(/^ +/, "", line)
            sub(/  .*/, "", line)
            names = line
            value = "-"
            if (index(line, " ") > 0) {
                names = substr(line, 1, index(line, " ") - 1)
                value = substr(line, index(line, " ") + 1)
            }
            n = split(names, parts, ",")
            for (i = 1; i <= n; i++) print parts[i], value
        }'
}

# kidreaper.8 as text: roff font escapes and zero-width marks dropped.
page_text=$(sed -e 's/\\f[BIRP]//g' -e 's/\\&//g' -e 's/\\(aq/'"'"'/g' "$page8")

# The roff of one section: from `.SH NAME` or `.SS NAME` to the next heading.
section() {
    awk -v want="$1" '
        /^\.S[HS] / {
            title = $0
            sub(/^\.S[HS] /, "", title)
            gsub(/"/, "", title)
            inside = (title == want)
            next
        }
        inside' <<<"$page_text"
}

# The term lines of a section: `FLAG[, FLAG] [VALUE]` lines followed by `.RS`.
section_terms() {
    section "$1" | awk '/^\.RS/ { if (prev ~ /^-/) print prev } { prev = $0 }'
}
global_terms=$(section_terms "GLOBAL OPTIONS")

# Whether FLAG is a term in TERMS, and the value name after it ("" for none).
term_value() {
    local flag=$1 terms=$2
    awk -v flag="$flag" '
        {
            line = $0
            n = split(line, words, /[ ,]+/)
            for (i = 1; i <= n; i++) {
                if (words[i] == flag) {
                    # The value, if any, follows the last flag of the term.
                    last = n
                    print "found", (words[last] ~ /^-/ ? "" : words[last])
                    exit
                }
            }
        }' <<<"$terms"
}

# A flag as a whole word: not followed or preceded by a letter, digit or dash.
has_word() {
    local flag=$1 file=$2
    grep -qE -- "(^|[^A-Za-z0-9-])${flag}([^A-Za-z0-9-]|\$)" "$file"
}

declare -A all_flags=()
for command in "" check diagnose reap; do
    label=${command:-kidreaper}
    read -r -a args <<<"$command"
    flags=$(help_flags "${args[@]}")
    if [[ -z $flags ]]; then
        problem "$label --help: no flags found"
        continue
    fi
    if [[ -n $command ]]; then
        terms=$(section_terms "$command")
        [[ -n $terms ]] || problem "kidreaper.8: no section for the command $command"
    else
        terms=""
    fi
    while read -r flag value; do
        all_flags[$flag]=1
        # (b) In kidreaper(8), in its command's section or in GLOBAL OPTIONS.
        found=$(term_value "$flag" "$terms")
        [[ -n $found ]] || found=$(term_value "$flag" "$global_terms")
        if [[ -z $found ]]; then
            if grep -qE -- "(^|[^A-Za-z0-9-])${flag}([^A-Za-z0-9-]|\$)" <<<"$page_text"; then
                problem "kidreaper.8: $label $flag is mentioned but not documented in the ${command:-GLOBAL OPTIONS} section"
            else
                problem "kidreaper.8: $label $flag is missing"
            fi
            continue
        fi
        man_value=${found#found}
        man_value=${man_value# }
        if [[ $value == - && -n $man_value ]]; then
            problem "kidreaper.8: $label $flag takes no value, the page shows $man_value"
        elif [[ $value != - && -z $man_value ]]; then
            problem "kidreaper.8: $label $flag takes a value ($value), the page shows none"
        fi
    done <<<"$flags"
done

# (c) Every flag in both completions.
for flag in "${!all_flags[@]}"; do
    has_word "$flag" "$bash_completion" || problem "kidreaper.bash: $flag is missing"
    has_word "$flag" "$zsh_completion" || problem "_kidreaper: $flag is missing"
done

# (d) The completion files parse.
if ! out=$(bash -n "$bash_completion" 2>&1); then
    [[ -n $out ]] || out="exit status non-zero"
    while IFS= read -r line; do problem "bash -n kidreaper.bash: $line"; done <<<"$out"
fi
if ! command -v zsh >/dev/null; then
    problem "zsh: not installed, cannot check _kidreaper"
elif ! out=$(zsh -n "$zsh_completion" 2>&1); then
    [[ -n $out ]] || out="exit status non-zero"
    while IFS= read -r line; do problem "zsh -n _kidreaper: $line"; done <<<"$out"
fi

# ... and the bash completion completes. complete_words WORD... prints COMPREPLY, one a
# line, for the completion of the last word (in a clean interactive-like bash).
bash_completion_lib=/usr/share/bash-completion/bash_completion
complete_words() {
    env -i PATH="$PATH" HOME="${HOME:-/tmp}" TERM=dumb bash --norc --noprofile -c '
        lib=$1 file=$2
        shift 2
        source "$lib" >/dev/null 2>&1 || { echo "!cannot source $lib"; exit 0; }
        source "$file" 2>/dev/null || { echo "!cannot source $file"; exit 0; }
        spec=$(complete -p kidreaper 2>/dev/null) || { echo "!no completion for kidreaper"; exit 0; }
        func=$(sed -n "s/.*-F \([^ ]*\).*/\1/p" <<<"$spec")
        [[ -n $func ]] || { echo "!no completion function in: $spec"; exit 0; }
        COMP_WORDS=("$@")
        COMP_CWORD=$(( ${#COMP_WORDS[@]} - 1 ))
        COMP_LINE="$*"
        COMP_POINT=${#COMP_LINE}
        COMPREPLY=()
        "$func" kidreaper "${COMP_WORDS[COMP_CWORD]}" "${COMP_WORDS[COMP_CWORD-1]}"
        printf "%s\n" "${COMPREPLY[@]}"
    ' complete_words "$bash_completion_lib" "$bash_completion" "$@"
}

if [[ ! -r $bash_completion_lib ]]; then
    problem "$bash_completion_lib: missing (bash-completion is not installed)"
else
    replies=$(complete_words kidreaper reap --met)
    if [[ $replies == '!'* ]]; then
        problem "bash completion: ${replies#!}"
    elif ! grep -qx -- --metric <<<"$replies"; then
        problem "bash completion: 'kidreaper reap --met' offers ${replies//$'\n'/ } instead of --metric"
    else
        # Each command's flags, offered after the command.
        for command in check diagnose reap; do
            replies=$(complete_words kidreaper "$command" -)
            while read -r flag _; do
                grep -qx -- "$flag" <<<"$replies" ||
                    problem "bash completion: 'kidreaper $command -' does not offer $flag"
            done < <(help_flags "$command")
        done
        replies=$(complete_words kidreaper "")
        for command in check diagnose reap; do
            grep -qx -- "$command" <<<"$replies" ||
                problem "bash completion: 'kidreaper ' does not offer $command"
        done
        replies=$(complete_words kidreaper reap --metric "")
        [[ ${replies//$'\n'/ } == "private pss rss anon" ]] ||
            problem "bash completion: 'kidreaper reap --metric ' offers '${replies//$'\n'/ }'"
    fi
fi

if ((problems)); then
    echo "$problems problem(s)"
    exit 1
fi
echo "ok: both pages render cleanly; ${#all_flags[@]} flags documented and completed"
exit 0
