import type { ComponentChildren } from 'preact';

/** A column of a list table: its heading, and what each row shows under it. */
export interface Column<T> {
  /** The heading; on a phone, where each row is a card, the label above the cell. */
  label: string;
  cell: (row: T) => ComponentChildren;
  /** Right-aligned, with figures of one width. */
  number?: boolean;
  /** On a phone, the card's title: across its top, with no label. */
  title?: boolean;
  /** The cell names its row for screen readers (`<th scope="row">`). */
  rowHeader?: boolean;
  /** The heading is for screen readers only (a column of buttons, say). */
  hiddenLabel?: boolean;
  /** Drawn for the eye only (a bar that repeats the figures beside it): screen readers skip it. */
  decorative?: boolean;
  /** More classes on the cells. */
  class?: string;
  /** A tooltip on each cell: the exact figure behind a rounded one. */
  tooltip?: (row: T) => string;
}

const classes = (...names: Array<string | false | undefined>) => names.filter(Boolean).join(' ') || undefined;

/**
 * The dashboard's tables: a row per item, scrolling sideways when wider than the screen and, with
 * `cards` (the default), one card per row on a phone, each cell under its column's name.
 */
export function ListTable<T>({
  label,
  rows,
  rowKey,
  columns,
  cards = true,
  class: extra,
  children,
}: {
  /** The table's accessible name. */
  label?: string;
  rows: T[];
  rowKey: (row: T, index: number) => string | number;
  columns: Array<Column<T>>;
  cards?: boolean;
  class?: string;
  /** Shown under the table, scrolling with it (a legend). */
  children?: ComponentChildren;
}) {
  return (
    <div class="table-scroll">
      <table class={classes('list', cards && 'cards', extra)} aria-label={label}>
        <thead>
          <tr>
            {columns.map((column) => (
              <th key={column.label} scope="col" class={classes(column.number && 'number')}>
                {column.hiddenLabel ? <span class="visually-hidden">{column.label}</span> : column.label}
              </th>
            ))}
          </tr>
        </thead>
        <tbody>
          {rows.map((row, index) => (
            <tr key={rowKey(row, index)}>
              {columns.map((column) => {
                const Cell = column.rowHeader ? 'th' : 'td';
                return (
                  <Cell
                    key={column.label}
                    scope={column.rowHeader ? 'row' : undefined}
                    class={classes(column.number && 'number', column.class, column.title && 'card-title')}
                    data-label={cards && !column.title && !column.hiddenLabel ? column.label : undefined}
                    title={column.tooltip?.(row)}
                    aria-hidden={column.decorative ? 'true' : undefined}
                  >
                    {column.cell(row)}
                  </Cell>
                );
              })}
            </tr>
          ))}
        </tbody>
      </table>
      {children}
    </div>
  );
}
