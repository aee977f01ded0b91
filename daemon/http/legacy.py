"""POST /transcribe/url: the old engine's synchronous API, now "create a job, wait for it".

The answer, its status codes and its timing are what they always were: the request takes one of
MAX_TRANSCRIPTS_PARALLEL slots (423 at once or a wait, per REJECT_OVER_PARALLEL), downloads,
transcribes and answers on its own connection; the job record it leaves carries its uid as id.
"""

from __future__ import annotations

import falcon

from daemon.config import DaemonConfig
from daemon.http.bodies import read_json
from daemon.http.request_models import TranscribeRequest
from daemon.http.validation import parse_json
from daemon.jobs.record import Job, Origin
from daemon.jobs.client import Jobs


class TranscribeUrl:
    def __init__(self, config: DaemonConfig, scheduler: Jobs) -> None:
        self.config = config
        self.scheduler = scheduler

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        # Checked before a slot or a record (the URL too): a request that cannot work is the caller's error.
        options = parse_json(TranscribeRequest, read_json(req)).options()
        deadline = req.context.started + self.config.request_timeout_seconds
        job = self.scheduler.run_now(Job.new(Origin.TRANSCRIBE_URL, options, req.context.uid), deadline)
        req.context.audio_seconds = job.result["duration"]
        req.context.redecoded = job.redecoded
        resp.media = job.result


def add_routes(app: falcon.App, config: DaemonConfig, scheduler: Jobs) -> None:
    app.add_route("/transcribe/url", TranscribeUrl(config, scheduler))
