import { useState } from 'preact/hooks';
import { del, get, uploadFile, type FileObject, type List } from '../api.js';
import { ErrorMessage, Loading, PageHeader, StatusBadge } from '../components/common.js';
import { type Column, ListTable } from '../components/list-table.js';
import { useLoad } from '../components/use-load.js';
import { bytes, count, dateTime } from '../format.js';
import { currentRoute, href, navigate } from '../router.js';
import './files.css';

interface Upload {
  name: string;
  sent: number;
  total: number;
  abort: AbortController;
}

/** Asks first: a file a job still names cannot be read back once deleted. */
export async function confirmAndDelete(file: FileObject): Promise<boolean> {
  if (!confirm(`Delete ${file.filename} (${file.id})? This cannot be undone.`)) return false;
  await del(`/files/${encodeURIComponent(file.id)}`);
  return true;
}

export function FilesPage() {
  const files = useLoad((signal) => get<List<FileObject>>('/files', {}, signal).then((list) => list.data), []);
  const [upload, setUpload] = useState<Upload | null>(null);
  const [dragging, setDragging] = useState(false);
  const [failure, setFailure] = useState<Error | null>(null);

  const send = async (file: File) => {
    setFailure(null);
    const abort = new AbortController();
    setUpload({ name: file.name, sent: 0, total: file.size, abort });
    try {
      const stored = await uploadFile(file, (sent, total) => setUpload({ name: file.name, sent, total, abort }), abort.signal);
      // The upload goes on while the reader looks at other pages; it only takes them to the file if they are still here.
      if (currentRoute().parts.join('/') === 'files') navigate(href('files', stored.id));
      else setUpload(null);
    } catch (error) {
      setFailure(error as Error);
      setUpload(null);
    }
  };

  const chosen = (list: FileList | null | undefined) => {
    if (!list || list.length === 0) return;
    if (list.length > 1) setFailure(new Error('Upload one file at a time: each file is its own training or validation file.'));
    else void send(list[0]!);
  };

  const remove = async (file: FileObject) => {
    setFailure(null);
    try {
      if (await confirmAndDelete(file)) files.reload();
    } catch (error) {
      setFailure(error as Error);
    }
  };
  const columns: Array<Column<FileObject>> = [
    {
      label: 'File',
      class: 'file-name',
      title: true,
      cell: (file) => (
        <>
          <a href={href('files', file.id)}>{file.filename}</a>
          <div class="muted mono">{file.id}</div>
        </>
      ),
    },
    { label: 'Purpose', cell: (file) => file.purpose },
    { label: 'Size', number: true, tooltip: (file) => `${count(file.bytes)} bytes`, cell: (file) => bytes(file.bytes) },
    { label: 'Created', cell: (file) => dateTime(file.created_at) },
    {
      label: 'Status',
      cell: (file) => (
        <>
          <StatusBadge status={file.status} />
          {file.status_details && <div class="muted status-details">{file.status_details}</div>}
        </>
      ),
    },
    {
      label: 'Actions',
      hiddenLabel: true,
      class: 'file-actions',
      cell: (file) => (
        <button class="danger" aria-label={`Delete ${file.filename}`} onClick={() => remove(file)}>
          Delete
        </button>
      ),
    },
  ];

  return (
    <>
      <PageHeader title="Files" />
      <label
        class={`drop-zone${dragging ? ' dragging' : ''}${upload ? ' busy' : ''}`}
        onDragOver={(event) => {
          event.preventDefault();
          setDragging(true);
        }}
        // Moving over the zone's own text leaves the label too; only leaving the zone ends the drag.
        onDragLeave={(event) => {
          if (!event.currentTarget.contains(event.relatedTarget as Node | null)) setDragging(false);
        }}
        onDrop={(event) => {
          event.preventDefault();
          setDragging(false);
          if (!upload) chosen(event.dataTransfer?.files);
        }}
      >
        <input
          type="file"
          class="visually-hidden"
          accept=".jsonl"
          disabled={upload !== null}
          onChange={(event) => {
            chosen(event.currentTarget.files);
            // The same file chosen again after a failure is a change too.
            event.currentTarget.value = '';
          }}
        />
        <strong>Drop a JSONL file here, or choose one</strong>
        <span class="muted">Fine-tuning data (chat, prompt/completion or preference examples); the dataset doctor reports on it once uploaded.</span>
      </label>
      {upload && (
        <div class="upload-progress" aria-live="polite">
          <span>
            Uploading {upload.name}: {upload.total ? Math.floor((upload.sent / upload.total) * 100) : 0}%
          </span>
          <progress max={upload.total || 1} value={upload.sent} aria-label={`Uploading ${upload.name}`} />
          <span class="muted">
            {bytes(upload.sent)} of {bytes(upload.total)}
          </span>
          <button type="button" class="secondary" onClick={() => upload.abort.abort()}>
            Cancel upload
          </button>
        </div>
      )}
      <ErrorMessage error={failure} />

      <h2>Uploaded files</h2>
      <ErrorMessage error={files.error} />
      {!files.data ? (
        !files.error && <Loading what="files" />
      ) : files.data.length === 0 ? (
        <p class="muted">No files yet: drop one above, or upload with the SDK or `tunelab`.</p>
      ) : (
        <ListTable label="Files" class="files-list" rows={files.data} rowKey={(file) => file.id} columns={columns} />
      )}
    </>
  );
}
