"""Stand-in for ComfyUI's `server`: `PromptServer.instance` and its `send_progress_text`, which shows text on a
running node in the frontend (ComfyUI 0.3.64); every text sent is recorded in `instance.progress_texts`."""


class PromptServer:
    instance = None

    def __init__(self):
        PromptServer.instance = self
        self.progress_texts = []  # (node_id, text)

    def send_progress_text(self, text, node_id, sid=None):
        self.progress_texts.append((node_id, text))


def _reset():
    PromptServer()
