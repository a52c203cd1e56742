#!/usr/bin/perl
# Generate a realistic, deterministic SQL dump on stdout (pg_dump --inserts style).
#
#   scripts/gen-sql-dump.pl [--bytes N] [--seed S]
#   scripts/gen-sql-dump.pl --mutate PERCENT [--cluster LINES] [--seed S] < v1.sql > v2.sql
#
# The dump has five tables (customers, products, orders, order_items, reviews) with
# varied names, e-mails, timestamps, decimals, hex ids and free text drawn from a
# Zipf-like vocabulary, so that it compresses roughly 3x with zstd -3 (not the ~100x
# of pgbench data). Output is identical for the same --bytes and --seed.
#
# --mutate reads a dump on stdin and writes it with about PERCENT % of the INSERT lines
# changed (a value edited) or followed by a newly inserted row; the rest is untouched.
# This models "tomorrow's dump" for the bytes-added-by-the-second-dump figures. Changes come
# in regions, as in a real database (recent orders change, old ones do not): the dump is cut
# into runs of --cluster lines (default 1000), 5 x PERCENT % of the runs are touched, and
# within a touched run a line changes with probability 1/5. --cluster 1 scatters the changes
# uniformly (then no chunk of a content-defined chunker survives at 2%, for any tool).
use strict;
use warnings;

my $bytes  = 100 * 1024 * 1024;
my $seed   = 42;
my $mutate = undef;
my $cluster = 1000;
while (@ARGV) {
    my $a = shift @ARGV;
    if    ($a eq '--bytes')  { $bytes  = parse_size(shift @ARGV); }
    elsif ($a eq '--seed')   { $seed   = shift @ARGV; }
    elsif ($a eq '--mutate') { $mutate = shift @ARGV; }
    elsif ($a eq '--cluster') { $cluster = shift @ARGV; }
    else { die "gen-sql-dump.pl: unknown argument '$a'\n"; }
}

sub parse_size {
    my ($s) = @_;
    die "gen-sql-dump.pl: bad size '$s'\n" unless defined $s && $s =~ /^(\d+(?:\.\d+)?)([KMGT]i?B?)?$/i;
    my ($n, $u) = ($1, uc($2 // ''));
    $u =~ s/I?B$//;
    my %m = ('' => 1, K => 1024, M => 1024**2, G => 1024**3, T => 1024**4);
    return int($n * $m{$u});
}

srand($seed);
binmode STDOUT;
binmode STDIN;

if (defined $mutate) {
    my $p = $mutate / 100.0;
    my ($touch, $inside) = $cluster > 1 ? ($p * 5, 0.2) : (1, $p);
    if ($touch > 1) { $inside = $p; $touch = 1; }
    my $buf = '';
    my $n = 0;
    my $lineno = 0;
    my $hot = 0;
    while (my $line = <STDIN>) {
        $hot = (rand() < $touch) if $lineno++ % $cluster == 0;
        if ($hot && substr($line, 0, 12) eq 'INSERT INTO ' && rand() < $inside) {
            if (rand() < 0.5) {
                # edit: change the first decimal number after the id, or append to text
                unless ($line =~ s/(\d+)\.(\d\d)/sprintf("%d.%02d", $1 + 1 + int(rand(50)), int(rand(100)))/e) {
                    $line =~ s/'([^']*)'/'$1 (edited)'/;
                }
                $buf .= $line;
            } else {
                $buf .= $line;
                $n++;
                $line =~ s/VALUES \((\d+)/'VALUES (' . ($1 + 900000000 + $n)/e;
                $buf .= $line;
            }
        } else {
            $buf .= $line;
        }
        if (length($buf) >= 1 << 20) { print $buf; $buf = ''; }
    }
    print $buf;
    exit 0;
}

# ---- vocabulary -------------------------------------------------------------------------
my @cons = qw(b c d f g h j k l m n p r s t v w z br ch cr dr fl gr pl pr sh st th tr);
my @vow  = qw(a e i o u ai ea io ou);
my %seen;
my @words;
while (@words < 6000) {
    my $syl = 1 + int(rand(3.2));
    my $w = '';
    $w .= $cons[rand @cons] . $vow[rand @vow] for 1 .. $syl;
    $w .= $cons[rand @cons] if rand() < 0.4;
    next if $seen{$w}++;
    push @words, $w;
}
my $nw = @words;
sub word { return $words[int($nw * (rand() ** 2.2))]; }
sub words {
    my ($n) = @_;
    my @o;
    push @o, $words[int($nw * (rand() ** 2.2))] for 1 .. $n;
    return join(' ', @o);
}

my @first = map { ucfirst } @words[0 .. 299];
my @last  = map { ucfirst } @words[300 .. 799];
my @domains = map { $_ . ('.com', '.net', '.org', '.io', '.de', '.fr')[$_ =~ tr/a// % 6] } @words[800 .. 839];
my @cities  = map { ucfirst } @words[900 .. 1099];
my @streets = map { ucfirst } @words[1100 .. 1499];
my @status  = qw(pending paid shipped delivered cancelled refunded);
my @curr    = qw(EUR USD GBP CHF SEK);
my @cats    = map { ucfirst } @words[1500 .. 1539];

sub ts {
    # 2019-01-01 .. 2026-11-21, seconds resolution
    my $t = 1546300800 + int(rand(250_000_000));
    my @g = gmtime($t);
    return sprintf("%04d-%02d-%02d %02d:%02d:%02d+00", $g[5] + 1900, $g[4] + 1, $g[3], $g[2], $g[1], $g[0]);
}
sub hex8 { return sprintf("%08x", int(rand(4294967296))); }

# ---- dump --------------------------------------------------------------------------------
my $out = '';
my $written = 0;
sub emit {
    $out .= $_[0];
    if (length($out) >= 1 << 20) {
        print $out;
        $written += length($out);
        $out = '';
    }
}
sub room { return $written + length($out) < $bytes; }

emit(<<'EOS');
--
-- PostgreSQL database dump
--

SET statement_timeout = 0;
SET lock_timeout = 0;
SET client_encoding = 'UTF8';
SET standard_conforming_strings = on;
SET check_function_bodies = false;
SET client_min_messages = warning;

CREATE TABLE public.customers (id bigint PRIMARY KEY, first_name text, last_name text, email text, phone text, city text, created_at timestamptz, balance numeric(12,2));
CREATE TABLE public.products (id bigint PRIMARY KEY, sku text, name text, category text, price numeric(10,2), stock integer, description text);
CREATE TABLE public.orders (id bigint PRIMARY KEY, customer_id bigint, status text, currency text, total numeric(12,2), created_at timestamptz, ship_to text, note text);
CREATE TABLE public.order_items (id bigint PRIMARY KEY, order_id bigint, product_id bigint, sku text, quantity integer, unit_price numeric(10,2));
CREATE TABLE public.reviews (id bigint PRIMARY KEY, product_id bigint, customer_id bigint, rating smallint, title text, body text, created_at timestamptz, token text);

EOS

# The tables are written in blocks so that every table keeps appearing as the dump grows.
my ($cid, $pid, $oid, $iid, $rid) = (0, 0, 0, 0, 0);
while (room()) {
    for (1 .. 2000) {
        $cid++;
        my $f = $first[rand @first];
        my $l = $last[rand @last];
        emit(sprintf("INSERT INTO public.customers VALUES (%d, '%s', '%s', '%s.%s%d\@%s', '+%d %03d %03d %04d', '%s', '%s', %d.%02d);\n",
            $cid, $f, $l, lc $f, lc $l, int(rand(1000)), $domains[rand @domains],
            1 + int(rand(98)), int(rand(1000)), int(rand(1000)), int(rand(10000)),
            $cities[rand @cities], ts(), int(rand(20000)) - 2000, int(rand(100))));
    }
    for (1 .. 500) {
        $pid++;
        emit(sprintf("INSERT INTO public.products VALUES (%d, 'SKU-%s', '%s %s', '%s', %d.%02d, %d, '%s');\n",
            $pid, uc hex8(), ucfirst word(), word(), $cats[rand @cats], int(rand(900)) + 1, int(rand(100)),
            int(rand(5000)), words(8 + int(rand(25)))));
    }
    for (1 .. 4000) {
        $oid++;
        my $note = rand() < 0.3 ? words(3 + int(rand(12))) : '';
        emit(sprintf("INSERT INTO public.orders VALUES (%d, %d, '%s', '%s', %d.%02d, '%s', '%d %s Street, %05d %s', '%s');\n",
            $oid, 1 + int(rand($cid)), $status[rand @status], $curr[rand @curr], int(rand(3000)), int(rand(100)), ts(),
            1 + int(rand(400)), $streets[rand @streets], int(rand(100000)), $cities[rand @cities], $note));
        for (1 .. 1 + int(rand(4))) {
            $iid++;
            emit(sprintf("INSERT INTO public.order_items VALUES (%d, %d, %d, 'SKU-%s', %d, %d.%02d);\n",
                $iid, $oid, 1 + int(rand($pid)), uc hex8(), 1 + int(rand(9)), int(rand(500)), int(rand(100))));
        }
    }
    for (1 .. 2500) {
        $rid++;
        emit(sprintf("INSERT INTO public.reviews VALUES (%d, %d, %d, %d, '%s', '%s', '%s', '%s%s%s%s');\n",
            $rid, 1 + int(rand($pid)), 1 + int(rand($cid)), 1 + int(rand(5)), ucfirst(words(2 + int(rand(5)))),
            words(6 + int(rand(40))), ts(), hex8(), hex8(), hex8(), hex8()));
    }
}
emit("\n--\n-- PostgreSQL database dump complete\n--\n\n");
print $out;
