//! The live view's web page: static files compiled into the binary, so it works the
//! same from the local demo and through `kubectl port-forward`, with no build step
//! and nothing fetched from elsewhere. The page reads `/api/events`.

/// One embedded file.
pub struct Asset {
    pub body: &'static [u8],
    pub content_type: &'static str,
}

/// The file served at `path`, if it is one of the page's.
pub fn asset(path: &str) -> Option<Asset> {
    let (body, content_type): (&'static str, _) = match path {
        "/" | "/index.html" => (
            include_str!("assets/index.html"),
            "text/html; charset=utf-8",
        ),
        "/ui/app.js" => (
            include_str!("assets/app.js"),
            "text/javascript; charset=utf-8",
        ),
        "/ui/style.css" => (include_str!("assets/style.css"), "text/css; charset=utf-8"),
        _ => return None,
    };
    Some(Asset {
        body: body.as_bytes(),
        content_type,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_and_what_it_loads_are_served() {
        let index = asset("/").expect("index");
        let html = std::str::from_utf8(index.body).expect("utf-8");
        for linked in ["/ui/app.js", "/ui/style.css"] {
            assert!(html.contains(linked), "index links {linked}");
            assert!(asset(linked).is_some(), "{linked} is served");
        }
        assert!(asset("/ui/missing.js").is_none());
    }
}
