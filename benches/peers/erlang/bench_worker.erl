%% The `restart` workload's worker: tells the driver each time it (re)starts, and stops with
%% an abnormal reason on `crash`, so its supervisor restarts it.
-module(bench_worker).
-behaviour(gen_server).
-export([start_link/1, init/1, handle_call/3, handle_cast/2]).

start_link(Driver) -> gen_server:start_link(?MODULE, Driver, []).

init(Driver) ->
    Driver ! {started, self()},
    {ok, Driver}.
handle_call(_, _From, S) -> {reply, ok, S}.
handle_cast(crash, S) -> {stop, crash, S}.
