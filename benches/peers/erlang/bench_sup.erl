%% The `restart` workload's supervisor: one permanent worker, one_for_one, and a restart
%% intensity the workload never reaches.
-module(bench_sup).
-behaviour(supervisor).
-export([start_link/1, init/1]).

start_link(Driver) -> supervisor:start_link(?MODULE, Driver).

init(Driver) ->
    {ok, {#{strategy => one_for_one, intensity => 1000000000, period => 1},
          [#{id => worker, start => {bench_worker, start_link, [Driver]},
             restart => permanent, type => worker}]}}.
