%% cairn-bench's workloads on Erlang/OTP, for benches/compare.sh.
%%
%%   erlc -o OUT *.erl
%%   erl -noshell +S 2:2 +P 4000000 -pa OUT -run bench main WORKLOAD SCALE
%%
%% Runs WORKLOAD once (a fresh VM per run, like cairn-bench's fresh child process), checks the
%% answer, prints one JSON line per result row on stdout (cairn-bench's format, with
%% "system": "erlang" and "median_of": 1), details on stderr, and halts: status 0 on success,
%% 1 on a wrong answer, a crash or a timeout. Sizes are cairn-bench's at SCALE 1.
-module(bench).
-export([main/1]).
-export([ponger/1, ring_member/3, idle/1, skynet/3]).

-define(DEADLINE, 600000).
-define(FANOUT, 10).
-define(SHIFT, 40).

main([Workload, ScaleStr]) ->
    Scale = to_float(ScaleStr),
    Result = try run(Workload, Scale)
             catch C:E:St -> {error, io_lib:format("~p:~p ~p", [C, E, St])}
             end,
    case Result of
        {ok, Rows} ->
            [row(Workload, R, Scale) || R <- Rows],
            halt(0);
        {error, Why} ->
            io:format(standard_error, "erlang: ~s: FAILED: ~s~n", [Workload, Why]),
            halt(1)
    end.

to_float(S) ->
    case string:to_float(S) of
        {F, ""} -> F;
        _ -> float(list_to_integer(S))
    end.

scaled(Base, Min, Scale) -> max(Min, round(Base * Scale)).

now_ns() -> erlang:monotonic_time(nanosecond).

rate(Count, Ns) -> Count / (Ns / 1.0e9).

row(_Workload, {Bench, Unit, Better, Value}, Scale) ->
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

wait_for(Tag) ->
    receive {Tag, V} -> V
    after ?DEADLINE -> throw({no_answer, Tag})
    end.

run("ping-pong", Scale) ->
    N = scaled(1000000, 1, Scale),
    Me = self(),
    Ponger = spawn(bench, ponger, [undefined]),
    spawn(fun() ->
                  Ponger ! {serve, self()},
                  T0 = now_ns(),
                  Ponger ! 0,
                  pinger(Ponger, 0, N, T0, Me)
          end),
    case wait_for(ping_pong) of
        {ok, Ns} ->
            log("ping-pong: ~p round trips in ~.1f ms", [N, Ns / 1.0e6]),
            {ok, [{"ping-pong", "round_trips/s", higher, rate(N, Ns)}]};
        {error, Why} -> {error, Why}
    end;

run("fan-in", Scale) ->
    PerSender = scaled(5000000, 1, Scale),
    Senders = 2,
    Me = self(),
    %% The sink's mailbox grows without bound (Erlang has no bounded mailbox): the Erlang docs'
    %% advice for such a process is off-heap message queue data, so that each garbage
    %% collection does not copy the queue (with the default, this run takes ~40 s at 1/10).
    Sink = spawn_opt(fun() -> sink(list_to_tuple(lists:duplicate(Senders, 0)), 0,
                                 Senders * PerSender, Me) end,
                     [{message_queue_data, off_heap}]),
    T0 = now_ns(),
    [spawn(fun() -> feed(Sink, S bsl ?SHIFT, 0, PerSender) end) || S <- lists:seq(0, Senders - 1)],
    case wait_for(fan_in) of
        {ok, T1} ->
            Ns = T1 - T0,
            log("fan-in: ~p x ~p messages in ~.1f ms", [Senders, PerSender, Ns / 1.0e6]),
            {ok, [{"fan-in", "msgs/s", higher, rate(Senders * PerSender, Ns)}]};
        {error, Why} -> {error, Why}
    end;

run("skynet", Scale) ->
    Wanted = scaled(1000000, ?FANOUT, Scale),
    Levels = max(1, round(math:log10(Wanted))),
    Leaves = round(math:pow(?FANOUT, Levels)),
    Expected = Leaves * (Leaves - 1) div 2,
    Me = self(),
    T0 = now_ns(),
    spawn(bench, skynet, [Me, 0, Leaves]),
    receive
        {sum, Sum} ->
            Ns = now_ns() - T0,
            case Sum of
                Expected ->
                    log("skynet: ~p leaves, sum ~p, ~.1f ms", [Leaves, Sum, Ns / 1.0e6]),
                    {ok, [{"skynet", "ms", lower, Ns / 1.0e6}]};
                _ -> {error, io_lib:format("skynet sum ~p, expected ~p", [Sum, Expected])}
            end
    after ?DEADLINE -> {error, "skynet: no answer"}
    end;

run("spawn-idle", Scale) ->
    N = scaled(1000000, 1, Scale),
    C = counters:new(1, [write_concurrency]),
    garbage_collect(),
    Rss0 = rss(),
    Mem0 = erlang:memory(total),
    Procs0 = erlang:memory(processes),
    T0 = now_ns(),
    spawn_n(N, C),
    wait_count(C, N),
    Ns = now_ns() - T0,
    Rss1 = rss(),
    Mem1 = erlang:memory(total),
    Procs1 = erlang:memory(processes),
    Per = (Rss1 - Rss0) / N,
    PerVm = (Mem1 - Mem0) / N,
    log("spawn-idle: ~p processes in ~.1f ms; RSS ~.1f -> ~.1f MiB = ~p B/process; "
        "erlang:memory(total) +~p B/process, (processes) +~p B/process",
        [N, Ns / 1.0e6, Rss0 / 1048576, Rss1 / 1048576, round(Per), round(PerVm),
         round((Procs1 - Procs0) / N)]),
    {ok, [{"spawn-idle", "spawns/s", higher, rate(N, Ns)},
          {"spawn-idle", "bytes/process", lower, Per},
          {"spawn-idle", "vm_bytes/process", lower, PerVm}]};

run("ring", Scale) ->
    Size = scaled(10000, 2, Scale),
    Hops = Size * 100,
    Me = self(),
    Members = [spawn(bench, ring_member, [I, undefined, Me]) || I <- lists:seq(0, Size - 1)],
    Next = tl(Members) ++ [hd(Members)],
    [M ! {next, Nx} || {M, Nx} <- lists:zip(Members, Next)],
    T0 = now_ns(),
    hd(Members) ! Hops,
    {Last, T1} = wait_for(ring),
    Ns = T1 - T0,
    [exit(M, kill) || M <- Members],
    case Last =:= Hops rem Size of
        true ->
            log("ring: ~p processes x 100 laps = ~p hops in ~.1f ms", [Size, Hops, Ns / 1.0e6]),
            {ok, [{"ring", "hops/s", higher, rate(Hops, Ns)}]};
        false -> {error, io_lib:format("token ended at ~p, expected ~p", [Last, Hops rem Size])}
    end;

run("call", Scale) ->
    N = scaled(1000000, 1, Scale),
    {ok, Server} = gen_server:start(bench_counter, [], []),
    Me = self(),
    spawn(fun() ->
                  T0 = now_ns(),
                  R = calls(Server, 1, N),
                  Me ! {call, {R, now_ns() - T0}}
          end),
    case wait_for(call) of
        {ok, Ns} ->
            log("call: ~p sequential gen_server:calls in ~.1f ms", [N, Ns / 1.0e6]),
            {ok, [{"call", "calls/s", higher, rate(N, Ns)}]};
        {{error, Why}, _} -> {error, Why}
    end;

run("restart", Scale) ->
    N = scaled(100000, 1, Scale),
    %% A crash report and a supervisor report per restart would measure the logger.
    logger:set_primary_config(level, none),
    {ok, _Sup} = bench_sup:start_link(self()),
    W0 = receive {started, W} -> W after ?DEADLINE -> throw(no_worker) end,
    T0 = now_ns(),
    restarts(W0, N),
    Ns = now_ns() - T0,
    log("restart: ~p crash + restart cycles in ~.1f ms", [N, Ns / 1.0e6]),
    {ok, [{"restart", "restarts/s", higher, rate(N, Ns)}]};

run(Other, _) ->
    {error, io_lib:format("unknown workload ~s", [Other])}.

%% --- ping-pong ---
ponger(Peer) ->
    receive
        {serve, P} -> ponger(P);
        I when is_integer(I) -> Peer ! I, ponger(Peer)
    end.

pinger(Ponger, Done, N, T0, Report) ->
    receive
        Done when Done + 1 =:= N -> Report ! {ping_pong, {ok, now_ns() - T0}};
        Done -> Ponger ! Done + 1, pinger(Ponger, Done + 1, N, T0, Report);
        I -> Report ! {ping_pong, {error, io_lib:format("pong ~p arrived as ~p", [I, Done])}}
    end.

%% --- fan-in ---
feed(_Sink, _Tag, N, N) -> ok;
feed(Sink, Tag, I, N) -> Sink ! (Tag bor I), feed(Sink, Tag, I + 1, N).

sink(Next, Received, Total, Report) ->
    receive
        V ->
            S = V bsr ?SHIFT,
            Seq = V band ((1 bsl ?SHIFT) - 1),
            case element(S + 1, Next) of
                Seq ->
                    case Received + 1 of
                        Total -> Report ! {fan_in, {ok, now_ns()}};
                        R -> sink(setelement(S + 1, Next, Seq + 1), R, Total, Report)
                    end;
                _ ->
                    Report ! {fan_in, {error, io_lib:format("message ~p from ~p out of order", [Seq, S])}}
            end
    end.

%% --- skynet ---
skynet(Parent, Num, 1) ->
    Parent ! {sum, Num};
skynet(Parent, Num, Size) ->
    Child = Size div ?FANOUT,
    Me = self(),
    [spawn(bench, skynet, [Me, Num + I * Child, Child]) || I <- lists:seq(0, ?FANOUT - 1)],
    Parent ! {sum, collect(?FANOUT, 0)}.

collect(0, Sum) -> Sum;
collect(K, Sum) -> receive {sum, V} -> collect(K - 1, Sum + V) end.

%% --- spawn-idle ---
spawn_n(0, _) -> ok;
spawn_n(K, C) -> spawn(bench, idle, [C]), spawn_n(K - 1, C).

idle(C) ->
    counters:add(C, 1, 1),
    receive stop -> ok end.

wait_count(C, N) ->
    case counters:get(C, 1) >= N of
        true -> ok;
        false -> receive after 1 -> wait_count(C, N) end
    end.

rss() ->
    {ok, Status} = file:read_file("/proc/self/status"),
    [Line] = [L || L <- binary:split(Status, <<"\n">>, [global]),
                   binary:match(L, <<"VmRSS:">>) =/= nomatch],
    [_, Kb | _] = string:lexemes(binary_to_list(Line), " \t"),
    list_to_integer(Kb) * 1024.

%% --- ring ---
ring_member(Index, Next, Report) ->
    receive
        {next, N} -> ring_member(Index, N, Report);
        0 -> Report ! {ring, {Index, now_ns()}}, ring_member(Index, Next, Report);
        K -> Next ! K - 1, ring_member(Index, Next, Report)
    end.

%% --- call ---
calls(_Server, I, N) when I > N -> ok;
calls(Server, I, N) ->
    case gen_server:call(Server, {add, 1}, 30000) of
        I -> calls(Server, I + 1, N);
        Other -> {error, io_lib:format("call ~p answered ~p", [I, Other])}
    end.

%% --- restart ---
restarts(_W, 0) -> ok;
restarts(W, K) ->
    gen_server:cast(W, crash),
    receive {started, W2} -> restarts(W2, K - 1)
    after 30000 -> throw(worker_did_not_come_back)
    end.
