"""POST /transcribe/url: the old engine's synchronous API, now "create a job, wait for it".

The answer, its status codes and its timing are what they always were: the request takes one of
MAX_TRANSCRIPTS_PARALLEL slots (423 at once or a wait, per REJECT_OVER_PARALLEL), downloads,
transcribes and answers on its own connection; the job record it leaves carries its uid as id.
"""

from __future__ import annotations

import falcon

from daemon.config import DaemonConfig
from daemon.http.bodies import read_json
from daemon.http.request import parse_request
from daemon.jobs.download import check_url
from daemon.jobs.record import Job, Options, Origin
from daemon.jobs.client import Jobs


class TranscribeUrl:
    def __init__(self, config: DaemonConfig, scheduler: Jobs) -> None:
        self.config = config
        self.scheduler = scheduler

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        request = parse_request(read_json(req))
        check_url(request.audio_url)  # before a slot or a record: a URL that cannot work is the caller's error
        options = Options(audio_url=request.audio_url, dual_channel=request.dual_channel,
                          format_text=request.format_text, punctuate=request.punctuate,
                          audio_start_from=request.audio_start_from, audio_end_at=request.audio_end_at,
                          word_boost=request.word_boost, boost_param=request.boost_param)
        deadline = req.context.started + self.config.request_timeout_seconds
        job = self.scheduler.run_now(Job.new(Origin.TRANSCRIBE_URL, options, req.context.uid), deadline)
        req.context.audio_seconds = job.result["duration"]
        req.context.redecoded = job.redecoded
        resp.media = job.result


def add_routes(app: falcon.App, config: DaemonConfig, scheduler: Jobs) -> None:
    app.add_route("/transcribe/url", TranscribeUrl(config, scheduler))
