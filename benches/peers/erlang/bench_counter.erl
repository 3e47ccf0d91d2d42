%% The `call` workload's server: a gen_server keeping a running total.
-module(bench_counter).
-behaviour(gen_server).
-export([init/1, handle_call/3, handle_cast/2]).

init([]) -> {ok, 0}.
handle_call({add, K}, _From, Total) -> {reply, Total + K, Total + K}.
handle_cast(_, Total) -> {noreply, Total}.
