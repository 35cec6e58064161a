# The pass/fail harness every test script shares (sourced, not run):
#   check NAME COMMAND...  runs one check: "ok: NAME" and the last lines of its output, or
#                          "FAILED: NAME" and more of them; `show` filters what is shown
#                          (a script may redefine it)
#   ok NAME / bad NAME     counts a check the script decided itself
#   skip NAME WHY          counts a check that cannot run here, saying why
#   summary SCRIPT         prints "SCRIPT: N passed, M failed, K skipped"; fails if M > 0
passed=0
failed=0
skipped=0

show() { cat; }

ok() {
    echo "ok: $*"
    passed=$((passed + 1))
}

bad() {
    echo "FAILED: $*"
    failed=$((failed + 1))
}

skip() {
    echo "skipped: $1 ($2)"
    skipped=$((skipped + 1))
}

# Functions run by check() are in an `if` condition, where `set -e` does not apply: each
# step of one that must pass says `|| return 1`.
check() {
    local name=$1 out rc=0
    shift
    out=$(mktemp)
    "$@" >"$out" 2>&1 || rc=$?
    if [ "$rc" = 0 ]; then
        ok "$name"
        show <"$out" | tail -n 8 | sed 's/^/    /'
    else
        bad "$name (exit status $rc)"
        show <"$out" | tail -n 40 | sed 's/^/    /'
    fi
    rm -f "$out"
}

summary() {
    echo "$1: $passed passed, $failed failed, $skipped skipped"
    [ "$failed" = 0 ]
}
