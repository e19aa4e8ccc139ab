#!/usr/bin/env bash
# Runs imgrun's whole test suite, as CI does. Run it as root on Debian bookworm: it first
# installs the missing test dependencies (scripts/deps.sh), then checks formatting, vets,
# builds the examples, and runs every test including the integration tests. As a normal
# user the root-only tests and those whose tools are missing are skipped.
#
# Environment:
#   GO_TEST_FLAGS         extra `go test` flags, e.g. "-run TestPull -v"
#   PKGS                  packages to test (default ./...)
#   TEST_TAGS             build tags (default integration,chaos: the short chaos suite; integration alone skips it)
#   IMGRUN_TEST_CACHE     where debootstrap images are cached (default /var/cache/imgrun-test)
#   IMGRUN_DEBIAN_MIRROR  mirror for debootstrap (default: the one apt uses)
set -uo pipefail
cd "$(dirname "$0")/.."
if [[ -x /usr/local/go/bin/go ]]; then
	export PATH=/usr/local/go/bin:$PATH
fi
if [[ $(id -u) -ne 0 ]]; then
	export PATH=${XDG_CACHE_HOME:-$HOME/.cache}/imgrun-test/bin:$PATH
fi

if ! bash scripts/deps.sh; then
	echo "FAIL: installing test dependencies (scripts/deps.sh)"
	exit 1
fi

# debootstrap uses the mirror apt already reaches, unless told otherwise.
if [[ -z ${IMGRUN_DEBIAN_MIRROR:-} ]]; then
	m=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources 2>/dev/null |
		grep -oE 'https?://[^ ]+/debian/?( |$)' | grep -v security | head -1 | tr -d ' ' || true)
	[[ -n $m ]] && export IMGRUN_DEBIAN_MIRROR=$m
fi

tags=${TEST_TAGS:-integration,chaos}
failed=()
step() { # step NAME CMD...: runs CMD, remembers NAME when it fails
	local name=$1
	shift
	echo "== $name"
	"$@" || failed+=("$name")
}

unformatted() {
	local files
	files=$(find . -name '*.go' -not -path './.git/*' -not -path '*/testdata/*' -print0 | xargs -0 gofmt -l)
	if [[ -n $files ]]; then
		echo "not gofmt-ed (run gofmt -w):"
		echo "$files"
		return 1
	fi
}

step gofmt unformatted
step "go vet" go vet -tags "$tags" ./...
step "go build" go build ./...
if [[ -d examples ]]; then
	step "go build examples" go build ./examples/...
fi
if ((${#failed[@]})); then
	echo "FAIL: ${failed[*]} (tests run anyway)"
fi

# go test comes last so that its ok/FAIL lines close the output.
echo "== go test"
# shellcheck disable=SC2086
go test -tags "$tags" -count=1 -timeout 30m ${GO_TEST_FLAGS:-} ${PKGS:-./...}
rc=$?
if ((rc == 0 && ${#failed[@]})); then
	rc=1
fi
exit $rc
