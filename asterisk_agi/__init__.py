"""AGI: the protocol (environment, commands, escaping, hangup), the asyncio FastAGI
server, the classic stdin/stdout entry (`calltrack-agi`) and the handlers
(`route`) that Asterisk's dialplan calls."""
