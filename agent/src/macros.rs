//! The `snapshot!` macro.

/// Plants a snapshot point.
///
/// ```
/// # #[derive(serde::Serialize)] struct Cart { total: u64 }
/// # let cart = Cart { total: 1 }; let user_id = 7u64; let coupon = Some("X"); let status = 200;
/// loupe_agent::snapshot!("checkout.apply_discount", cart, user = user_id, ?coupon, %status);
/// ```
///
/// Fields are captured with `serde::Serialize` by default, `?` for `Debug` and `%` for
/// `Display` (the sigils of `tracing`); `name = expr` names an expression. The name must be
/// lowercase dotted segments of `[a-z0-9_]`, checked at compile time. Every `snapshot!` with
/// the same name belongs to one point.
///
/// A malformed name does not compile:
///
/// ```compile_fail
/// loupe_agent::snapshot!("Checkout.ApplyDiscount", total = 1);
/// ```
///
/// ```compile_fail
/// loupe_agent::snapshot!("checkout..apply", total = 1);
/// ```
///
/// While the point is disarmed the whole cost is one relaxed atomic load and a branch not
/// taken; the field expressions are not evaluated. While armed, they are evaluated once and
/// captured out of line.
#[macro_export]
macro_rules! snapshot {
    ($name:literal $(,)?) => {
        $crate::__snapshot_fields!(@parse $name; [];)
    };
    ($name:literal, $($fields:tt)+) => {
        $crate::__snapshot_fields!(@parse $name; []; $($fields)+)
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __snapshot_fields {
    (@parse $name:literal; [$($acc:tt)*]; $(,)?) => {
        $crate::__snapshot_emit!($name; $($acc)*)
    };
    (@parse $name:literal; [$($acc:tt)*]; $field:ident = ? $value:expr $(, $($rest:tt)*)?) => {
        $crate::__snapshot_fields!(@parse $name; [$($acc)* ($field, debug, $value)]; $($($rest)*)?)
    };
    (@parse $name:literal; [$($acc:tt)*]; $field:ident = % $value:expr $(, $($rest:tt)*)?) => {
        $crate::__snapshot_fields!(@parse $name; [$($acc)* ($field, display, $value)]; $($($rest)*)?)
    };
    (@parse $name:literal; [$($acc:tt)*]; $field:ident = $value:expr $(, $($rest:tt)*)?) => {
        $crate::__snapshot_fields!(@parse $name; [$($acc)* ($field, serde, $value)]; $($($rest)*)?)
    };
    (@parse $name:literal; [$($acc:tt)*]; ? $field:ident $(, $($rest:tt)*)?) => {
        $crate::__snapshot_fields!(@parse $name; [$($acc)* ($field, debug, $field)]; $($($rest)*)?)
    };
    (@parse $name:literal; [$($acc:tt)*]; % $field:ident $(, $($rest:tt)*)?) => {
        $crate::__snapshot_fields!(@parse $name; [$($acc)* ($field, display, $field)]; $($($rest)*)?)
    };
    (@parse $name:literal; [$($acc:tt)*]; $field:ident $(, $($rest:tt)*)?) => {
        $crate::__snapshot_fields!(@parse $name; [$($acc)* ($field, serde, $field)]; $($($rest)*)?)
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __snapshot_emit {
    ($name:literal; $(($field:ident, $kind:ident, $value:expr))*) => {{
        const _: () = $crate::__private::assert_point_name($name);
        static __LOUPE_CALLSITE: $crate::__private::Callsite = $crate::__private::Callsite::new(
            $name,
            ::core::file!(),
            ::core::line!(),
            ::core::module_path!(),
            &[$(::core::stringify!($field)),*],
            &[$(::core::stringify!($kind)),*],
        );
        // A link-section static is what makes the point listable before it is hit; crates
        // that deny `unsafe_code` still accept the expansion.
        #[allow(unsafe_code)]
        #[$crate::__private::linkme::distributed_slice($crate::__private::CALLSITES)]
        #[linkme(crate = $crate::__private::linkme)]
        static __LOUPE_CALLSITE_REF: &'static $crate::__private::Callsite = &__LOUPE_CALLSITE;
        if __LOUPE_CALLSITE.is_armed() {
            __LOUPE_CALLSITE.hit(&[$($crate::__private::FieldValue::$kind(&$value)),*]);
        }
    }};
}
