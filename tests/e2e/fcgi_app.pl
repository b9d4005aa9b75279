#!/usr/bin/perl
# A pre-fork FastCGI server under FCGI::ProcManager, for kidreaper's end-to-end tests.
#
# The manager builds ~200 MB of Perl scalars before pm_manage(), so every child inherits them
# copy-on-write. Handlers (every response is one line of JSON naming the child's pid):
#   /ok                 nothing
#   /read?items=N       copies N preloaded strings (a moving window per child): Perl's string
#                       COW writes the source SV's flags and the refcount byte in its buffer,
#                       so pages are unshared without the child growing
#   /leak?mb=N          appends an N MB string to a global array that is never freed
#   /leak?kb=N          the same with N KiB (kb wins over mb)
#   /slow?ms=N          sleeps N ms (completes even when HUP/TERM arrives meanwhile)
# Any handler given ?pid=P does nothing unless it is served by child P: it answers 421 with its
# own pid, so a client can aim work at one child by retrying.
#
# Children exit after the current request on HUP or TERM (pm_pre_dispatch/pm_post_dispatch);
# the manager turns HUP into TERM for all children and respawns them; TERM stops everything.
# Nothing outlives --max-lifetime: manager and children end themselves by SIGALRM.
#
# Usage: fcgi_app.pl --port PORT --pidfile FILE [--children 3] [--items 1000000]
#                    [--max-lifetime 600]
use strict;
use warnings;

use FCGI;
use FCGI::ProcManager;
use Getopt::Long qw(GetOptions);
use Time::HiRes qw(time sleep);

my %opt = (children => 3, items => 1_000_000, 'max-lifetime' => 600);
GetOptions(\%opt, 'port=i', 'pidfile=s', 'children=i', 'items=i', 'max-lifetime=i')
  && defined $opt{port} && defined $opt{pidfile}
  or die "usage: $0 --port PORT --pidfile FILE [--children N] [--items N] [--max-lifetime S]\n";

my $deadline = time + $opt{'max-lifetime'};
alarm $opt{'max-lifetime'};    # default action of SIGALRM: the process ends

# ~200 bytes per item in the heap: SV head, body and a ~160-byte string buffer.
my @DATA;
$#DATA = $opt{items} - 1;
for my $i (0 .. $opt{items} - 1) {
    $DATA[$i] = sprintf('%08d:', $i) . ('abcdefghij' x 15);
}
my @LEAK;
my $cursor = 0;

my $socket = FCGI::OpenSocket("127.0.0.1:$opt{port}", 128)
  or die "fcgi_app: cannot listen on 127.0.0.1:$opt{port}: $!\n";
my $request = FCGI::Request(\*STDIN, \*STDOUT, \*STDERR, \%ENV, $socket, FCGI::FAIL_ACCEPT_ON_INTR);

my $pm = FCGI::ProcManager->new({
    n_processes => $opt{children},
    pid_fname   => $opt{pidfile},
    die_timeout => 10,
});
$pm->pm_manage();

# From here on: a child. Alarms are not inherited across fork.
alarm(int($deadline - time) > 0 ? int($deadline - time) : 1);

sub query_param {
    my ($name, $default) = @_;
    for my $pair (split /&/, $ENV{QUERY_STRING} // '') {
        my ($key, $value) = split /=/, $pair, 2;
        return $value if $key eq $name && defined $value && $value =~ /^\d+$/;
    }
    return $default;
}

sub respond {
    my ($status, %fields) = @_;
    my $body = '{' . join(',', map {
        my $v = $fields{$_};
        qq("$_":) . ($v =~ /^-?\d+$/ ? $v : qq("$v"))
    } sort keys %fields) . "}\n";
    print "Status: $status\r\nContent-Type: application/json\r\n\r\n$body";
}

sub handle {
    my $path = $ENV{PATH_INFO} || $ENV{SCRIPT_NAME} || $ENV{REQUEST_URI} || '/';
    $path =~ s/\?.*//;
    my $target = query_param('pid', 0);
    if ($target && $target != $$) {
        return respond('421 Misdirected Request', pid => $$, op => 'skip');
    }
    if ($path eq '/ok') {
        return respond('200 OK', pid => $$, op => 'ok', items => scalar @DATA);
    }
    if ($path eq '/read') {
        my $items = query_param('items', 10_000);
        my $length = 0;
        for (1 .. $items) {
            my $copy = $DATA[$cursor];    # string COW: writes flags and buffer refcount
            $length += length $copy;
            $cursor = 0 if ++$cursor >= @DATA;
        }
        return respond('200 OK', pid => $$, op => 'read', items => $items, bytes => $length);
    }
    if ($path eq '/leak') {
        my $mb = query_param('mb', 2);
        my $kb = query_param('kb', $mb * 1024);
        push @LEAK, 'L' x ($kb * 1024);
        return respond('200 OK', pid => $$, op => 'leak', kb => $kb, leaked => scalar @LEAK);
    }
    if ($path eq '/slow') {
        my $ms = query_param('ms', 1000);
        my $until = time + $ms / 1000;
        while ((my $left = $until - time) > 0) {
            sleep $left;    # a signal cuts nanosleep short; sleep the rest
        }
        return respond('200 OK', pid => $$, op => 'slow', ms => $ms);
    }
    return respond('404 Not Found', pid => $$, op => 'unknown');
}

while ($request->Accept() >= 0) {
    $pm->pm_pre_dispatch();
    handle();
    $request->Finish();
    $pm->pm_post_dispatch();
}
exit 0;
