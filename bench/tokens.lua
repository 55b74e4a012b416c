-- wrk script of bench/run's token-carrying configurations: each request carries the next of
-- the tokens in the file TOKENS_FILE names (one per line) as its bearer token, in turn, so that
-- every token is used as often as the others. The requests are formatted once, in init: the
-- script costs wrk a table lookup per request.
local requests = {}
local next_index = 0

function init(args)
    for token in io.lines(os.getenv("TOKENS_FILE")) do
        requests[#requests + 1] = wrk.format(nil, nil, { ["Authorization"] = "Bearer " .. token })
    end
end

function request()
    next_index = next_index % #requests + 1
    return requests[next_index]
end
