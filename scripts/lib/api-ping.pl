#!/usr/bin/perl
# Times N `GET /_ping` requests against an engine API Unix socket, for
# scripts/bench-engine-api.sh, which runs it on the host (the relayed socket) and in the
# guest (the engine's own socket) with the same perl, so both sides pay the same client.
#   conn  a new connection per request (HTTP/1.0, read to EOF): what the docker CLI does
#   keep  one keep-alive connection, N requests on it (HTTP/1.1): the framing alone
# Prints `conn_ms=X keep_ms=Y` (mean per request, milliseconds).
use strict;
use warnings;
use IO::Socket::UNIX;
use Socket qw(SOCK_STREAM);
use Time::HiRes qw(time);

my ($path, $n) = @ARGV;
die "usage: api-ping.pl SOCKET N\n" unless defined $n && $n > 0;

sub connect_api {
    my $s = IO::Socket::UNIX->new(Type => SOCK_STREAM, Peer => $path)
        or die "connecting to $path: $!\n";
    $s->autoflush(1);
    return $s;
}

# one keep-alive answer: status, headers, then a Content-Length or chunked body
sub read_answer {
    my ($s) = @_;
    my $status = <$s>;
    die "no answer\n" unless defined $status;
    die "answer: $status" unless $status =~ m{^HTTP/1\.\d 2};
    my ($len, $chunked) = (0, 0);
    while (my $l = <$s>) {
        last if $l eq "\r\n";
        $len = $1 if $l =~ /^Content-Length:\s*(\d+)/i;
        $chunked = 1 if $l =~ /^Transfer-Encoding:\s*chunked/i;
    }
    my $body;
    if ($chunked) {
        while (my $size = <$s>) {
            my $k = hex($size);
            read($s, $body, $k + 2);
            last if $k == 0;
        }
    } elsif ($len) {
        read($s, $body, $len);
    }
}

for (1 .. 3) {    # warm-up: the engine's first answers are slower
    my $s = connect_api();
    print $s "GET /_ping HTTP/1.0\r\nHost: engine\r\n\r\n";
    local $/;
    my $all = <$s>;
}

my $t0 = time;
for (1 .. $n) {
    my $s = connect_api();
    print $s "GET /_ping HTTP/1.0\r\nHost: engine\r\n\r\n";
    local $/;
    my $all = <$s>;
    die "answer: " . ($all // '') unless defined $all && $all =~ m{^HTTP/1\.\d 2};
    close $s;
}
my $conn = (time - $t0) * 1000 / $n;

my $s = connect_api();
$t0 = time;
for (1 .. $n) {
    print $s "GET /_ping HTTP/1.1\r\nHost: engine\r\n\r\n";
    read_answer($s);
}
my $keep = (time - $t0) * 1000 / $n;
close $s;
printf "conn_ms=%.3f keep_ms=%.3f\n", $conn, $keep;
