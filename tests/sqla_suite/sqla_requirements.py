"""What SQLite 3.40 (the standard library's) supports, for SQLAlchemy's compliance suite.

The same class is used for ``sqlite+lambdalite://`` and for the stock ``sqlite://`` (pysqlite)
baseline, so the two pass sets compare the dialects, not the declarations. A feature is declared
open when SQLite has it; scripts/sqla-suite runs both and prints the difference.
"""

from __future__ import annotations

from sqlalchemy.testing import exclusions
from sqlalchemy.testing.requirements import SuiteRequirements

_open = property(lambda self: exclusions.open())
_closed = property(lambda self: exclusions.closed())


class Requirements(SuiteRequirements):  # type: ignore[misc]
    # DDL
    table_ddl_if_exists = _open
    index_ddl_if_exists = _open
    create_table_as = _open
    create_temp_table_as = _open
    views = _open
    temporary_views = _open
    computed_columns = _open
    computed_columns_stored = _open
    computed_columns_virtual = _open
    server_defaults = _open
    expression_server_defaults = _open
    indexes_with_expressions = _open
    unicode_ddl = _open

    # SQL
    boolean_col_expressions = _open
    nullsordering = _open
    intersect = _open
    except_ = _open
    window_functions = _open
    ctes = _open
    ctes_with_update_delete = _open
    ctes_with_values = _open
    tuple_in = _open
    tuple_in_w_empty = _open
    update_from = _open
    supports_is_distinct_from = _open
    regexp_match = _open  # the pysqlite dialect registers a REGEXP function
    order_by_label_with_expression = _open
    json_type = _open
    json_array_indexes = _open
    supports_bitwise_and = _open
    supports_bitwise_or = _open
    supports_bitwise_not = _open
    supports_bitwise_shift = _open

    # INSERT / UPDATE / DELETE
    empty_inserts = _open
    empty_inserts_executemany = _open
    multivalues_inserts = _open
    insert_returning = _open
    update_returning = _open
    delete_returning = _open
    insert_executemany_returning = _open
    insertmanyvalues = _open
    dbapi_lastrowid = _open
    sane_rowcount = _open
    sane_multi_rowcount = _closed  # executemany rowcount with RETURNING batches

    # types
    datetime_historic = _open
    date_historic = _open
    uuid_data_type = _closed
    datetime_timezone = _closed
    time_timezone = _closed

    # reflection
    view_reflection = _open
    view_column_reflection = _open
    temp_table_names = _open
    has_temp_table = _open
    temp_table_reflect_indexes = _open
    reflects_pk_names = _open
    foreign_key_constraint_option_reflection_ondelete = _open
    foreign_key_constraint_option_reflection_onupdate = _open
    fk_constraint_option_reflection_ondelete_restrict = _open
    fk_constraint_option_reflection_ondelete_noaction = _open
    fk_constraint_option_reflection_onupdate_restrict = _open
    inline_check_constraint_reflection = _open
    computed_columns_reflect_persisted = _open
    reflect_table_options = _open
    foreign_key_constraint_name_reflection = _closed  # SQLite keeps no names: SA parses SQL
    unique_constraint_reflection = _closed
    schemas = _closed  # the provisioning's ATTACHed test_schema is not seen here (both dialects)
    parens_in_union_contained_select_w_limit_offset = _closed
    parens_in_union_contained_select_wo_limit_offset = _closed

    # transactions
    savepoints = _open
    autocommit = _open
    isolation_level = _open

    @property
    def get_isolation_level_values(self) -> exclusions.compound:
        return exclusions.open()
