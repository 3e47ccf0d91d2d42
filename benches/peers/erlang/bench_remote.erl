%% Distributed Erlang between two local nodes (loopback only), for the remote workloads:
%%
%%   erl -noshell -sname cairn_bench_a@localhost +S 2:2 -pa OUT \
%%       -kernel inet_dist_use_interface '{127,0,0,1}' -run bench_remote main WORKLOAD SCALE
%%
%% The node started this way (A) starts a second node (B) on the same host with OTP's `peer`
%% module, runs the workload between them, prints JSON rows like bench.erl's, stops B and
%% halts. Workloads:
%%   remote-throughput  one process on A sends 1,000,000 small integers to one process on B;
%%                      B checks count and order; one-way msgs/s (higher is better)
%%   remote-call        20,000 sequential gen_server:call/3 from A to a gen_server on B
%%                      (after 1,000 untimed); calls/s, and the median and 99th percentile
%%                      round trip in microseconds (lower is better)
%%   remote-fan         1,000 processes on A, each sending 1,000 small integers to its own
%%                      process on B; each checks count and order; msgs/s
-module(bench_remote).
-export([main/1, start_sink/2, start_sinks/3]).

-define(DEADLINE, 600000).

main([Workload, ScaleStr]) ->
    Scale = case string:to_float(ScaleStr) of
                {F, ""} -> F;
                _ -> float(list_to_integer(ScaleStr))
            end,
    Result = try
                 Peer = start_peer(),
                 try run(Workload, Scale, Peer)
                 after peer:stop(element(1, Peer))
                 end
             catch C:E:St -> {error, io_lib:format("~p:~p ~p", [C, E, St])}
             end,
    case Result of
        {ok, Rows} ->
            [row(R, Scale) || R <- Rows],
            halt(0);
        {error, Why} ->
            io:format(standard_error, "erlang: ~s: FAILED: ~s~n", [Workload, Why]),
            halt(1)
    end.

start_peer() ->
    Dir = filename:dirname(code:which(?MODULE)),
    Name = list_to_atom("cairn_bench_b" ++ integer_to_list(erlang:unique_integer([positive]))),
    {ok, Pid, Node} = peer:start_link(#{name => Name, host => "localhost",
                                        args => ["+S", "2:2", "-pa", Dir,
                                                 "-setcookie", atom_to_list(erlang:get_cookie()),
                                                 "-kernel", "inet_dist_use_interface",
                                                 "{127,0,0,1}"]}),
    {Pid, Node}.

scaled(Base, Min, Scale) -> max(Min, round(Base * Scale)).
now_ns() -> erlang:monotonic_time(nanosecond).

row({Bench, Unit, Better, Value}, Scale) ->
    io:format("{\"bench\": \"~s\", \"system\": \"erlang\", \"value\": ~s, \"unit\": \"~s\", "
              "\"better\": \"~s\", \"median_of\": 1, \"min\": ~s, \"max\": ~s, "
              "\"workers\": ~p, \"scale\": ~s}~n",
              [Bench, num(Value), Unit, Better, num(Value), num(Value),
               erlang:system_info(schedulers_online), num_scale(Scale)]).

num(V) when abs(V) >= 100 -> integer_to_list(round(V));
num(V) -> float_to_list(float(V), [{decimals, 3}]).
num_scale(S) when S == round(S) -> integer_to_list(round(S));
num_scale(S) -> float_to_list(S, [short]).
log(Fmt, Args) -> io:format(standard_error, "   " ++ Fmt ++ "~n", Args).

run("remote-throughput", Scale, {_, Node}) ->
    N = scaled(1000000, 1, Scale),
    Sink = erpc:call(Node, ?MODULE, start_sink, [self(), N]),
    T0 = now_ns(),
    spawn_link(fun() -> send_n(Sink, 0, N) end),
    receive
        {sink, ok} ->
            Ns = now_ns() - T0,
            log("remote-throughput: ~p messages A -> B in ~.1f ms", [N, Ns / 1.0e6]),
            {ok, [{"remote-throughput", "msgs/s", higher, N / (Ns / 1.0e9)}]};
        {sink, {error, Why}} -> {error, Why}
    after ?DEADLINE -> {error, "remote-throughput: no answer"}
    end;

run("remote-call", Scale, {_, Node}) ->
    N = scaled(20000, 1, Scale),
    Warmup = 1000,
    {ok, Server} = erpc:call(Node, gen_server, start, [bench_counter, [], []]),
    _ = calls(Server, 1, Warmup, []),
    Times = calls(Server, Warmup + 1, Warmup + N, []),
    Ns = lists:sum(Times),
    Sorted = lists:sort(Times),
    P50 = lists:nth(max(1, round(N * 0.5)), Sorted) / 1000,
    P99 = lists:nth(max(1, round(N * 0.99)), Sorted) / 1000,
    log("remote-call: ~p calls A -> B in ~.1f ms (~p calls/s); p50 ~.1f us, p99 ~.1f us",
        [N, Ns / 1.0e6, round(N / (Ns / 1.0e9)), P50, P99]),
    {ok, [{"remote-call", "calls/s", higher, N / (Ns / 1.0e9)},
          {"remote-call", "us_p50", lower, P50},
          {"remote-call", "us_p99", lower, P99}]};

run("remote-fan", Scale, {_, Node}) ->
    K = 1000,
    Per = scaled(1000, 1, Scale),
    Sinks = erpc:call(Node, ?MODULE, start_sinks, [self(), K, Per]),
    T0 = now_ns(),
    [spawn_link(fun() -> send_n(Sink, 0, Per) end) || Sink <- Sinks],
    case collect(K) of
        ok ->
            Ns = now_ns() - T0,
            log("remote-fan: ~p senders x ~p messages A -> B in ~.1f ms", [K, Per, Ns / 1.0e6]),
            {ok, [{"remote-fan", "msgs/s", higher, K * Per / (Ns / 1.0e9)}]};
        {error, Why} -> {error, Why}
    end;

run(Other, _, _) ->
    {error, io_lib:format("unknown workload ~s", [Other])}.

send_n(_Sink, N, N) -> ok;
send_n(Sink, I, N) -> Sink ! I, send_n(Sink, I + 1, N).

%% On B: a process that expects 0..N-1 in order and reports to Report on A.
start_sink(Report, N) ->
    spawn_opt(fun() -> sink(0, N, Report) end, [{message_queue_data, off_heap}]).

%% On B: K sinks of N numbers each, reporting to Report; returns their pids.
start_sinks(Report, K, N) ->
    [start_sink(Report, N) || _ <- lists:seq(1, K)].

collect(0) -> ok;
collect(K) ->
    receive
        {sink, ok} -> collect(K - 1);
        {sink, {error, Why}} -> {error, Why}
    after ?DEADLINE -> {error, "remote-fan: no answer"}
    end.

sink(N, N, Report) -> Report ! {sink, ok};
sink(I, N, Report) ->
    receive
        I -> sink(I + 1, N, Report);
        Other -> Report ! {sink, {error, io_lib:format("got ~p, expected ~p", [Other, I])}}
    end.

calls(_Server, I, N, Acc) when I > N -> Acc;
calls(Server, I, N, Acc) ->
    T0 = now_ns(),
    case gen_server:call(Server, {add, 1}, 30000) of
        I -> calls(Server, I + 1, N, [now_ns() - T0 | Acc]);
        Other -> throw({wrong_answer, I, Other})
    end.
